"""The web plumbing every hubd app shares (``hubd.web``): serving (``server``), error
answers (``errors``), logins and sessions (``auth``, by a ``policy``), the frame that
puts them together (``site``), live streams (``live``), and building blocks for OpenAPI
documents (``openapi``) and Prometheus metrics (``metrics``).

It imports nothing of the hub: an app hands it ``Accounts`` and a ``Backlog``.  The hub's
managers' page (``hubd.web.page``) is its first user.
"""
