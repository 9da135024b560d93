"""WebDAV for each site's files: WsgiDAV confined to a site's home (see :mod:`apiserver.dav.wsgi`)."""
