"""Reading what a request carries: images (base64 or fetched URLs) and ControlNet units."""
