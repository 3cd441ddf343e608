"""Home Assistant: announcement events in, speakers (``media_player.play_media``) out."""
