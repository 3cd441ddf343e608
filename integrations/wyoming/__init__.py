"""Wyoming: Oyez as a text-to-speech engine for Home Assistant and other Wyoming clients."""
