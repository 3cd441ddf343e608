"""Audio: ffmpeg transcoding with loudness normalisation, the live Opus encoder, chime mixing."""
