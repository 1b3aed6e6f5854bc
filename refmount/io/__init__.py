"""The only door to the outside world: origins (every byte read from outside goes through
``origins.Origins``), the origin policy, retries, the memory and disk caches, the reader and
fetch-ahead. Knows nothing of FUSE."""
