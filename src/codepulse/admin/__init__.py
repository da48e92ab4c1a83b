"""The superusers' platform tools that belong to no one domain: the task queue
(`GET /admin/tasks`, retry, cancel; `router`), an account's detail composed from several slices
(`users`) and the platform statistics (`GET /admin/stats`; `stats`). Every route requires
`Superuser` (403 `superuser_required`); every change is a platform audit event
(`orgs.service.audit_platform_event`: no organization).
"""
