"""The GPU dashboard (written only where GPUs report): utilisation, memory, temperature, power and
XID errors from the exporters, and the same per vLLM instance from the service's own series."""

from __future__ import annotations

import monitor.generate.expressions as q
from monitor.generate.panels import GPU, NS, DashboardSpec, PanelSpec, Variable, query

GPU_METRICS = "DCGM_FI_DEV_GPU_UTIL"


# the service's `instance` on GPU series is the vLLM instance, not the exporter `$instance` picks here
SERVICE_GPU = 'pool=~"$pool"'


def gpu_dashboard() -> DashboardSpec:
    legend = "{{instance}} GPU {{gpu}}"
    svc_legend = "{{pool}} {{instance}} GPU {{gpu}}"
    spec = DashboardSpec(
        uid="llm-slo-gpus", title="LLM GPUs", file_stem="gpus", time_from="now-3h",
        description="GPU telemetry under dcgm-exporter's names, as dcgm-exporter and `slo-monitor exporter` "
                    "(NVML) both serve them. GPUs on a host that runs one pool's servers carry that pool.",
        variables=[Variable("pool", "Pool", f"label_values({q.RUNNING}, pool)"),
                   Variable("model_name", "Model", f'label_values({q.RUNNING}{{pool=~"$pool"}}, model_name)'),
                   Variable("instance", "Exporter", f'label_values({GPU_METRICS}{{pool=~"$pool"}}, instance)')],
    )
    spec.rows = [
        ("GPUs", [
            PanelSpec("GPU utilisation", (query(f"DCGM_FI_DEV_GPU_UTIL{{{GPU}}}", legend),), "percent",
                      "Share of the sample period a kernel ran (DCGM_FI_DEV_GPU_UTIL).", min=0, max=100),
            PanelSpec("Tensor pipe active", (query(f"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{GPU}}}", legend),), "percentunit",
                      "Ratio of cycles the tensor pipe was active (profiling metrics; absent where DCP is not "
                      "available).", expect_data=False, min=0, max=1),
            PanelSpec("GPU memory used", (
                query(f"DCGM_FI_DEV_FB_USED{{{GPU}}}", f"used {legend}"),
                query(f"DCGM_FI_DEV_FB_USED{{{GPU}}} + DCGM_FI_DEV_FB_FREE{{{GPU}}}", f"total {legend}"),
            ), "mbytes", "Framebuffer memory used, and used + free (MiB)."),
            PanelSpec("GPU memory used ratio", (
                query(f"DCGM_FI_DEV_FB_USED{{{GPU}}}\n/\n(DCGM_FI_DEV_FB_USED{{{GPU}}} + DCGM_FI_DEV_FB_FREE{{{GPU}}})",
                   legend),
            ), "percentunit", "Above 90% a server is one long prompt away from out-of-memory.", min=0, max=1),
            PanelSpec("Temperature", (
                query(f"DCGM_FI_DEV_GPU_TEMP{{{GPU}}}", f"GPU {legend}"),
                query(f"DCGM_FI_DEV_MEMORY_TEMP{{{GPU}}}", f"memory {legend}"),
            ), "celsius", "GPU and memory temperature."),
            PanelSpec("Power draw", (query(f"DCGM_FI_DEV_POWER_USAGE{{{GPU}}}", legend),), "watt",
                      "Board power draw (W)."),
            PanelSpec("Last XID error (exporters)", (
                query(f"max by (instance, gpu, err_code, err_msg) (DCGM_FI_DEV_XID_ERRORS{{{GPU}}})",
                   "{{instance}} GPU {{gpu}} {{err_msg}}"),
            ), "none", "The code of the last XID event per GPU (0: none). 13, 31, 43, 45, 48, 63, 64, 74, 79, 92, 94, "
                       "95, 119 and 120 mean a server on that GPU needs a look.", width=24),
        ]),
        ("GPUs by the instance they serve (slo-monitor)", [
            # slo-monitor scrapes the same exporters and maps each GPU to the vLLM instance on it;
            # only the service knows that mapping, so these panels read its slo_monitor_gpu_* series
            PanelSpec("Utilisation by instance", (
                query(f"{NS}_gpu_utilization_ratio{{{SERVICE_GPU}}}", svc_legend),
            ), "percentunit", "GPU utilisation of each vLLM instance's GPUs.", expect_data=False, min=0, max=1),
            PanelSpec("Memory used by instance", (
                query(f"{NS}_gpu_memory_used_ratio{{{SERVICE_GPU}}}", svc_legend),
            ), "percentunit", "Above 90% the GPU becomes a health reason of its instance.", expect_data=False,
                min=0, max=1),
            PanelSpec("Temperature and power by instance", (
                query(f"{NS}_gpu_temperature_celsius{{{SERVICE_GPU}}}", f"°C {svc_legend}"),
                query(f"{NS}_gpu_power_watts{{{SERVICE_GPU}}}", f"W {svc_legend}"),
            ), "short", "GPU temperature (°C) and power draw (W).", expect_data=False),
            PanelSpec("XID events by instance", (
                query(f"{NS}_gpu_xid_last{{{SERVICE_GPU}}}", f"last XID {svc_legend}"),
                query(f"{NS}_gpu_xid_events_held{{{SERVICE_GPU}}}", f"held {svc_legend}"),
            ), "none", "The last XID per GPU and the XID events still counting against the instance's health.",
                expect_data=False),
        ]),
    ]
    return spec
