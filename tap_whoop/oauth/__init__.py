"""WHOOP OAuth: the app's token endpoint, and each member's access token."""
