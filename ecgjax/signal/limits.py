"""Amplitude limits of a body-surface ECG."""

# Kite et al. (telemetry paper) §3: values beyond ±60 mV are removed; no body-surface ECG reaches it.
OUT_OF_RANGE_MV = 60.0
