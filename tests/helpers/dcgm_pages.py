"""dcgm-exporter /metrics pages for the GPU tests."""

from __future__ import annotations

H100 = "NVIDIA H100 80GB HBM3"
U = [f"GPU-{i:08x}-aaaa-bbbb-cccc-000000000000" for i in range(8)]


POD = ',container="vllm",namespace="ai",pod="vllm-0"'


def dcgm_page(host_label: str, host: str, *, xid: int = 0, fb_used: int = 40000, gpus: tuple[int, ...] = (0, 1)) -> str:
    """A dcgm-exporter 4.x page as its render template writes it (trimmed to a few families)."""
    xid_labels = f',err_code="{xid}",err_msg="x"'

    def labels(i: int, extra: str = "") -> str:
        return (f'gpu="{i}",UUID="{U[4 + i]}",pci_bus_id="00000000:{0x18 + i:02X}:00.0",device="nvidia{i}",'
                f'modelName="{H100}",{host_label}="{host}",DCGM_FI_DRIVER_VERSION="550.54.15"{extra}')
    lines = [
        "# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz).",
        "# TYPE DCGM_FI_DEV_SM_CLOCK gauge",
        f"DCGM_FI_DEV_SM_CLOCK{{{labels(0)}}} 1980",
        f"DCGM_FI_DEV_SM_CLOCK{{{labels(1)}}} 345",
        "# HELP DCGM_FI_DEV_MEMORY_TEMP Memory temperature (in C).",
        "# TYPE DCGM_FI_DEV_MEMORY_TEMP gauge",
        f"DCGM_FI_DEV_MEMORY_TEMP{{{labels(0)}}} 9223372036854775794",  # old versions' blank
        "# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).",
        "# TYPE DCGM_FI_DEV_POWER_USAGE gauge",
        f"DCGM_FI_DEV_POWER_USAGE{{{labels(0)}}} 512.345000",
        f"DCGM_FI_DEV_POWER_USAGE{{{labels(1)}}} 70.000000",
        "# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).",
        "# TYPE DCGM_FI_DEV_GPU_UTIL gauge",
        f'DCGM_FI_DEV_GPU_UTIL{{{labels(0, POD)}}} 93',
        f"DCGM_FI_DEV_GPU_UTIL{{{labels(0)}}} 93",
        f"DCGM_FI_DEV_GPU_UTIL{{{labels(1)}}} 0",
        "# HELP DCGM_FI_DEV_XID_ERRORS Value of the last XID error encountered.",
        "# TYPE DCGM_FI_DEV_XID_ERRORS gauge",
        f'DCGM_FI_DEV_XID_ERRORS{{{labels(0, xid_labels)}}} {xid}',
        "# HELP DCGM_FI_DEV_FB_FREE Framebuffer memory free (in MiB).",
        "# TYPE DCGM_FI_DEV_FB_FREE gauge",
        f"DCGM_FI_DEV_FB_FREE{{{labels(0)}}} {81559 - fb_used}",
        f"DCGM_FI_DEV_FB_FREE{{{labels(1)}}} 81000",
        "# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).",
        "# TYPE DCGM_FI_DEV_FB_USED gauge",
        f"DCGM_FI_DEV_FB_USED{{{labels(0)}}} {fb_used}",
        f"DCGM_FI_DEV_FB_USED{{{labels(1)}}} 559",
        "# HELP DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL Total number of NVLink bandwidth counters.",
        "# TYPE DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL counter",
        f'DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL{{nvlink="0",gpu_uuid="{U[4]}",model_name="{H100}"}} 12345',
    ]
    return "\n".join(line for line in lines if 'gpu="1"' not in line or 1 in gpus) + "\n"
