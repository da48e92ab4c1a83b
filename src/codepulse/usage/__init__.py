"""AI coding-assistant usage: CLI sync, pricing, daily aggregates, dashboards, and metering of
billable organization events."""
