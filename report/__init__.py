"""The self-contained HTML report: routes, per-route breakdowns, the version diff, anomalies, errors."""
