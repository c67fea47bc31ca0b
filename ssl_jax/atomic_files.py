"""Temporary files for writers that write a file whole and then rename it into place.

`create_temp_beside(path)` creates an empty, uniquely named file in the folder of `path` (so that
`os.replace(tmp, path)` is a rename within one file system) with mode `0o666` less the process umask: the
mode `open(path, 'w')` would give a new file, which the rename carries over to `path`. `tempfile.mkstemp`
would instead create it `0o600` whatever the umask. The umask is applied by the kernel at creation; it is
never read or changed (changing it, even briefly, would affect files other threads create meanwhile).
"""

import os
import secrets

_ATTEMPTS = 100


def create_temp_beside(path: str, suffix: str = '.tmp') -> str:
  """Creates an empty file `.NAME.<random><suffix>` in the folder of `path` and returns its path.

  The folder must exist. The file's mode is `0o666 & ~umask`. Raises FileExistsError when no free name is
  found (100 random names all taken), OSError when the folder cannot be written.
  """
  folder = os.path.dirname(os.path.abspath(path))
  prefix = '.' + os.path.basename(path) + '.'
  for _ in range(_ATTEMPTS):
    candidate = os.path.join(folder, f'{prefix}{secrets.token_hex(6)}{suffix}')
    try:
      fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
      continue
    os.close(fd)
    return candidate
  raise FileExistsError(f'no free temporary file name for {path!r} in {folder!r} after {_ATTEMPTS} tries')
