"""codepulse: the backend of a SaaS for software teams (code scanning, AI-usage analytics)."""

__version__ = "0.1.0"
