"""GPIO and camera adapters: panic buttons, sirens, snapshots (``hubd.sensors``)."""
