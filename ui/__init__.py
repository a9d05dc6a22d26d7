"""The Dash operator and quality-engineer UI: ``create_app(settings, store)``, pages, security.

Imports pq and models only; never connectors or asyncua (it sees the lines through the store).
"""
