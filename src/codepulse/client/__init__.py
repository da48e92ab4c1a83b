"""The codepulse CLI's sync client: finds AI coding assistants' local logs, parses them into usage
records and uploads them. It imports nothing of the server (an import-linter contract holds it):
the CLI must start fast on a developer's laptop.

    records     UsageRecord: one model response, the fields of `POST /api/v1/sync`
    sources/    one module per tool: where its logs are and how to read them
"""
