"""Where the local model runs: the torch device a `--device` name means, whether this machine has it (a clear
ValueError naming the fix when not, raised before anything is loaded), and the dtype "auto" picks there.

Owns device and dtype choice; must not load a model or a tokenizer. Imports torch only inside its functions,
so checking a configuration that asks for no accelerator never imports it.
"""

from __future__ import annotations

from typing import Any

HALF_DTYPES = ("float16", "bfloat16")


def needs_torch(error: ImportError) -> ValueError:
    return ValueError(
        f"the local engine needs torch and transformers ({error}); pip install 'loopwire[local]'"
    )


def check_device(name: str) -> None:
    """Raise ValueError when `name` (cpu, cuda, cuda:N, mps) is not usable here; cpu always is."""
    if name != "cpu":
        resolve_device(name)


def resolve_device(name: str) -> Any:
    """The torch.device for `name`, or a ValueError saying why this machine cannot run it and what to do."""
    try:
        import torch
    except ImportError as error:
        raise needs_torch(error) from None
    if name.startswith("cuda"):
        _check_cuda(torch, name)
    elif name == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            "--device mps was asked for, but torch sees no MPS device here (it needs Apple silicon and a "
            "macOS build of torch); use --device cpu"
        )
    return torch.device(name)


def _check_cuda(torch: Any, name: str) -> None:
    _, _, index_text = name.partition(":")
    if index_text and not index_text.isdigit():
        raise ValueError(f"device must be cuda or cuda:N with N a number, got {name!r}")
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        raise ValueError(
            f"--device {name} was asked for, but this torch ({torch.__version__}) was built without CUDA: "
            "install a CUDA build of torch (https://pytorch.org/get-started/locally/) or use --device cpu"
        )
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ValueError(
            f"--device {name} was asked for, but torch {torch.__version__} (CUDA {torch.version.cuda}) sees "
            "no GPU: check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES, or use --device cpu"
        )
    index = int(index_text) if index_text else 0
    if index >= count:
        raise ValueError(
            f"--device {name} was asked for, but torch sees {count} GPU(s): cuda:0 to cuda:{count - 1}"
        )


def auto_dtype(device_type: str, config_dtype: str | None, bf16_supported: bool) -> str:
    """What dtype "auto" loads the weights in. CPU: float32 (half precision matmuls are slow or missing on
    most CPUs). An accelerator: the config's half dtype, else (a float32 checkpoint, or a GGUF dequantized
    to float32) bfloat16 where the device supports it, else float16; what vLLM's dtype "auto" does too."""
    if device_type == "cpu":
        return "float32"
    if config_dtype in HALF_DTYPES and (config_dtype != "bfloat16" or bf16_supported):
        return config_dtype
    return "bfloat16" if bf16_supported and device_type == "cuda" else "float16"
