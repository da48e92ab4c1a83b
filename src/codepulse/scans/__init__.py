"""Scans: background scans of repositories, findings and their triage, SARIF export."""
