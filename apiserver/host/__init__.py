"""The one privileged boundary: every change to the host that needs root goes through here.

``names``      the host-level names of a site's group and users (derived, unique, documented)
``tools``      the system's own account tools (groupadd, useradd, usermod, chpasswd, userdel,
               groupdel) under one lock, so /etc/passwd, /etc/group and /etc/shadow stay consistent
``crypt``      crypt(3) hashes PAM verifies (yescrypt through the system's libcrypt)
``layout``     a site's folders on disk: ``site<N>/fst`` and the ``<domain>``/``admin<N>`` links
``synthetic``  the site's own ``etc/passwd``, ``etc/group`` and ``etc/shadow`` in its root
``accounts``   SiteAccounts: a site's system accounts made, changed, locked and removed
``ids``        the host-ids table: which uid, gid and host names each site and user has
``databases``  the MariaDB user and PostgreSQL role of a site, locked, unlocked and dropped

The interface is narrow and typed (ints, validated names, host paths); nothing here parses
network input, so the package can move into a separate privileged process without the rest of
the server changing.  Everything blocks: callers run it on the blocking pool.
"""
