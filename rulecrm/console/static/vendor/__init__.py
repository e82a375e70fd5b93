"""Front-end libraries shipped unmodified (see README.md here): no CDN."""
