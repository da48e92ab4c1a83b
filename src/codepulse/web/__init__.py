"""The browser dashboard: server-rendered pages (Jinja2, htmx, uPlot) calling the domains' services
directly — never this application's own HTTP API. The top layer of the package (only the app
imports it).

    pages       mount_web: the routes, /static, HTML error pages, the pages' CSP
    session     the sign-in cookie (a token of the auth session table) and the page's viewer
    csrf        the CSRF token of every state-changing form and htmx request
    rendering   the Jinja2 environment and `render`
    forms       urlencoded form bodies, and validation errors as per-field messages
    account     sign in, sign up, sign out (a sign-in ends the session whose cookie it replaces)
    github      GitHub sign-in's start (a nonce cookie binds the flow to this browser) and landing page
    overview    the usage overview (cards, streaks, trends chart, breakdowns)
    settings    CLI tokens (create, shown once; revoke) and web sessions (revoke)
    scoped      an organization's pages: the viewer's role there, the objects in the path
    repositories  an organization's repositories: list, connect, import, scan now, archive
    scans       a scan: live progress (the scans slice's SSE, by cookie), cancel, findings, triage, SARIF
    orgs        my organizations (create; my invitations), an organization's settings and audit log
    members     an organization's members (roles, removal) and invitations (send, revoke)
    invitations the invitation mail's page (accept, decline), and my invitations by id
    verify      the email verification mail's landing page
"""
