"""The superusers' platform tools that belong to no one domain: today the task queue
(`GET /admin/tasks`, retry, cancel). Every route requires `Superuser` (403 `superuser_required`);
every change is a platform audit event (`orgs.service.audit_platform_event`: no organization).
"""
