"""workflows: see ../shared/STYLE.md for what belongs here."""
