"""Fortification profiles: how an application is recognised and which of its paths the web server may write.

The lists follow ApisCP's own modules (``$_aclList`` in apisnetworks/apiscp-modules
``modules/<app>.php``); where ApisCP has one list for two major versions it is split here, and
every path says why the application writes there (``fortification_info`` and the README show
it).  ``min`` is always ``max`` plus more: ApisCP's ``min`` is "the greatest degree of freedom".

A path ending in ``/`` is a folder writable with everything under it (new entries inherit the
right); without it, one file, or one folder in which the web server may add entries.  A ``*``
component matches any real folder at that level (Drupal's ``sites/*/files``), never a link.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import stat
from typing import Optional


@dataclasses.dataclass(frozen=True)
class Profile:
    """An application: how it is recognised and the paths it may write.

    ``markers`` is a tuple of alternatives, each a tuple of paths that must all exist;
    ``max_paths`` and ``min_extra`` are ``(path, reason)`` pairs.
    """

    name: str
    variant: str
    markers: tuple
    max_paths: tuple
    min_extra: tuple = ()
    #: files given to the web server user in min (each also among min_extra)
    control_files: tuple = ()

    @property
    def max(self) -> tuple:
        return tuple(p for p, _why in self.max_paths)

    @property
    def min(self) -> tuple:
        return self.max + tuple(p for p, _why in self.min_extra if p not in self.max)

    def reasons(self) -> dict:
        """{path: why the application writes there} of both lists."""
        return {p: why for p, why in self.max_paths + self.min_extra}

    def matches(self, folder: str) -> bool:
        return any(all(os.path.lexists(os.path.join(folder, m)) for m in group) for group in self.markers)


_WP_MAX = (
    ("wp-content/uploads/", "the media library: uploads, one folder per month, and resized images"),
    ("wp-content/cache/", "page caches (WP Super Cache, W3 Total Cache, WP Rocket)"),
    ("wp-content/wflogs/", "Wordfence's firewall rules and attack data"),
    ("wp-content/updraft/", "UpdraftPlus backups"),
)
_J3_MAX = (
    ("cache/", "the site's page and module cache"),
    ("tmp/", "uploaded extension packages and updates are unpacked here"),
    ("administrator/cache/", "the administrator back end's cache"),
    ("logs/", "log files (Joomla 3.5 and later)"),
    ("log/", "log files of older Joomla 3 installs"),
)
_J_MIN = (
    ("administrator/", "the back end's components, modules, templates and languages are installed here"),
    ("media/", "extensions' scripts, styles and images"),
    ("images/", "the media manager's uploads"),
    ("plugins/", "plugins are installed here"),
)
_DRUPAL_FILES = ("sites/*/files/", "each site's uploads, aggregated CSS/JS and generated image styles")
_M2_MAX = (
    ("var/cache/", "the configuration, layout and block cache"),
    ("var/session/", "sessions kept on disk"),
    ("var/page_cache/", "the built-in full page cache"),
    ("var/log/", "system and exception logs"),
    ("generated/code/", "generated factories, proxies and interceptors"),
    ("generated/metadata/", "compiled dependency injection configuration"),
    ("pub/static/", "deployed static view files"),
)
_LARAVEL_MAX = (
    ("storage/framework/cache/", "the file cache driver"),
    ("storage/framework/views/", "compiled Blade templates"),
    ("storage/framework/sessions/", "the file session driver"),
    ("storage/logs/", "the application log"),
    ("bootstrap/cache/", "cached configuration, routes, packages and services"),
)

#: Most specific first: the looser markers (artisan, wp-config.php) are checked last.
PROFILES = (
    Profile("magento", "2", (("bin/magento", "app/etc/di.xml"),), _M2_MAX, (
        ("var/", "imports, exports, reports and locks"),
        ("generated/", "all generated code (setup:di:compile)"),
        ("pub/media/", "product images and uploads (ApisCP's media, in Magento 2's layout)"),
    )),
    Profile("magento", "1", (("app/Mage.php",),), (
        ("media/downloadable/", "downloadable products' files"),
        ("downloader/", "Magento Connect's extension downloads"),
        ("var/cache/", "the configuration, layout and block cache"),
        ("var/session/", "sessions kept on disk"),
        ("var/log/", "system and exception logs"),
    ), (
        ("media/", "product images, WYSIWYG uploads and captchas"),
        ("var/", "imports, exports, reports and locks"),
    )),
    Profile("drupal", "8+", (("core/lib/Drupal.php",),), (_DRUPAL_FILES,), (
        ("modules/", "the update manager installs contributed modules here (ApisCP has no min for Drupal)"),
        ("themes/", "the update manager installs contributed themes here"),
    )),
    Profile("drupal", "7", (("includes/bootstrap.inc", "sites/default"), ("sites/all", "misc/drupal.js")),
            (_DRUPAL_FILES,), (
        ("sites/all/", "the update manager installs modules and themes here (ApisCP has no min for Drupal)"),
    )),
    Profile("joomla", "3", (("libraries/joomla",),), _J3_MAX, _J_MIN),
    # Joomla 4 and 5 have no libraries/joomla (ApisCP's marker); their logs moved under administrator/.
    Profile("joomla", "4+", (("libraries/src/Version.php", "administrator/index.php"),),
            _J3_MAX + (("administrator/logs/", "log files (Joomla 4 and later)"),), _J_MIN),
    Profile("laravel", "", (("artisan",),), _LARAVEL_MAX, (
        ("storage/framework/", "everything the framework keeps: also testing data and the maintenance file"),
    )),
    Profile("wordpress", "", (("wp-config.php",), ("wp-config-sample.php",), ("wp-includes/version.php",)),
            _WP_MAX, (
        ("wp-content/", "plugins, themes, languages and upgrades are installed here"),
        (".htaccess", "WordPress writes its permalink rules here"),
        ("wp-config.php", "the installer and caching plugins edit its constants"),
        ("wp-admin/includes/file.php", "the web server's in min, so that WordPress installs plugins itself "
                                       "instead of asking for FTP credentials (ApisCP's control file)"),
    ), control_files=("wp-admin/includes/file.php",)),
)
PROFILE_NAMES = tuple(dict.fromkeys(p.name for p in PROFILES))


def detect(folder: str) -> Optional[Profile]:
    """Blocking.  The profile whose marker files ``folder`` holds, or None."""
    for profile in PROFILES:
        if profile.matches(folder):
            return profile
    return None


def by_name(name: str) -> Optional[Profile]:
    """The newest variant of the profile called ``name`` (a manifest's ``base``), or None."""
    for profile in PROFILES:
        if profile.name == name:
            return profile
    return None


def expand(folder: str, entries) -> list:
    """Blocking.  ``entries`` with each ``*`` component replaced by the real folders it matches in
    ``folder`` (links are never matched; an entry that matches nothing is left out)."""
    out = []
    for entry in entries:
        if "*" not in entry:
            out.append(entry)
            continue
        tail = "/" if entry.endswith("/") else ""
        matched = [""]
        for part in entry.rstrip("/").split("/"):
            following = []
            for prefix in matched:
                if "*" not in part:
                    following.append(f"{prefix}/{part}" if prefix else part)
                    continue
                try:
                    with os.scandir(os.path.join(folder, prefix) if prefix else folder) as listing:
                        names = [e.name for e in listing if e.is_dir(follow_symlinks=False)]
                except OSError:
                    continue
                following.extend(f"{prefix}/{n}" if prefix else n
                                 for n in sorted(names) if fnmatch.fnmatchcase(n, part))
            matched = following
        for rel in matched:
            try:
                if stat.S_ISDIR(os.lstat(os.path.join(folder, rel)).st_mode) or not tail:
                    out.append(rel + tail)
            except OSError:
                continue
    return out
