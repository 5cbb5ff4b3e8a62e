"""HTTP routes: `ops` (health, readiness, metrics), `openai` (chat, models, search), `admin`."""
