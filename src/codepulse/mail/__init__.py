"""Durable mail: every message codepulse sends goes through an outbox row written in the sender's
transaction, delivered by the task queue (`mail.deliver`). See `codepulse.mail.outbox`."""
