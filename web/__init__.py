"""The hub managers' status page and JSON API (``hubd.web``)."""
