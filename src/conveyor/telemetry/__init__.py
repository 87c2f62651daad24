"""Operations telemetry: OpenTelemetry traces (`tracing`) and JSON log lines (`logs`).

Both are off unless asked for, and cost nothing then: the rest of conveyor reaches them through
small hooks that test one module flag (`tracing.ENABLED`) before doing anything, and the
OpenTelemetry SDK (the `otel` extra) is imported only when tracing is configured.
"""
