"""GPU telemetry: the per-node NVML exporter and the service side that reads dcgm-exporter pages.

The two halves meet in one type, `GpuReading`: the exporter (`nvml.NvmlReader`) produces readings from
NVML and renders them under dcgm-exporter's names (`render.render_page`); the service parses any
dcgm-exporter or `slo-monitor exporter` page back into readings (`parse.parse_gpu_page`), places each
GPU in a pool and instance (`mapping.GpuMapper`) and turns readings into health reasons
(`health.gpu_reasons`, `health.GpuTracker`). Nothing here imports `pynvml` at module load: the service
never needs NVML, and the exporter must start (and say why it sees no GPU) where the driver is missing.
"""
