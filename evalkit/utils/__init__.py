"""Small shared helpers: devices, seeding, atomic file writes and flag parsing."""
