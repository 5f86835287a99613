"""Private file I/O every reader and writer in prunus goes through.

- `prunus._io.atomic`: atomic writes (temp file or directory + fsync + rename/exchange), stale
  temporaries of dead writers removed, crash points for the kill tests.
- `prunus._io.safe`: bounded reads of regular files only (never a FIFO or a device).
"""
