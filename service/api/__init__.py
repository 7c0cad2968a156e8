"""The REST API (aiohttp): parse, call one service function, serialise."""
