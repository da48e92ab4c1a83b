"""Notifications: the one way any domain tells a user something (codepulse.notifications.service)."""
