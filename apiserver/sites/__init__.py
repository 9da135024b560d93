"""Sites on disk and the security module's filesystem work.

``home``      SiteHome: resolve a site path inside its home, never outside
``walk``      the one walk over a folder tree: by descriptors, never through a link, any depth
``acl``       POSIX ACLs read and changed in process (the kernel's attributes, setfacl's rules)
``htaccess``  parse .htaccess like Apache, report what re-enables disabled features; the policy
``fortify``   Fortification profiles, ACLs for the web server user, learn/write windows
``audit``     what the web server user owns or may write
``htpasswd``  Apache password files (bcrypt cost 5 entries; Apache's formats verified)
``setuid``    setuid/setgid files of a template root, checked against the package manager

Every function here blocks (filesystem, ACLs, subprocesses): callers run it off the reactor.
"""

from apiserver.sites.home import DOCUMENT_ROOT, SiteHome, SiteHomes  # noqa: F401
