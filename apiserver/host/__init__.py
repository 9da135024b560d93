"""What apiserver changes on the host beyond its own files, as root: the one privileged package.

``databases``   the MariaDB user and PostgreSQL role of a site, locked, unlocked and dropped
"""
