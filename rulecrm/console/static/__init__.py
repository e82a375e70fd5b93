"""The console's stylesheet and scripts, served under /static/ (shipped as package data)."""
