"""Synthesis: text in, utterances out.

Normalisation (`text`), sentences (`sentences`), the audio cache (`cache`) and the speech
pipeline that ties them to the providers and the transcoder (`pipeline`).
"""
