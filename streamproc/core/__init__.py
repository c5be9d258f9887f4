"""The pure core: typed events in, decisions out. No I/O, no asyncio, no clock reads."""
