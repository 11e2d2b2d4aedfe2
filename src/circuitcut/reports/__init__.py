"""Reports: plots (PNG and SVG) and Markdown."""
