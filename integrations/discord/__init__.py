"""Discord: the bot, its slash commands and voice playback (work in progress; see the player)."""
