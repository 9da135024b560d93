import glob
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def documents(pattern: str) -> list:
    """The shipped documents matching ``pattern`` (relative to this file), sorted."""
    return sorted(os.path.relpath(path, HERE) for path in glob.glob(os.path.join(HERE, pattern)))


setup(
    name="apiserver",
    version="0.1.0",
    description="ApisCP-compatible SOAP/XML-RPC API server with a pluggy plugin framework",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",  # an SPDX expression (PEP 639), which replaces the License :: classifier
    license_files=["LICENSE"],
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Twisted",
        "Operating System :: POSIX :: Linux",
        "Topic :: Internet :: WWW/HTTP :: HTTP Servers",
    ],
    python_requires=">=3.11",
    # Every package under the checkout's root: an editable install is then one static .pth of the
    # root (standards-based, PEP 660), where twistd also finds twisted/plugins/apiserver_plugin.py.
    package_dir={"": "."},
    packages=find_packages(include=["apiserver", "apiserver.*"]) + ["twisted.plugins"],
    package_data={"apiserver.lifecycle": ["plan_files/*.ini", "plan_files/.skeleton.ini"]},
    # The documents the systemd unit's Documentation= names (/usr/local/share/doc/apiserver as root).
    data_files=[
        ("share/doc/apiserver", documents("*.md") + documents("LICENSE")),
        ("share/doc/apiserver/docs", documents("docs/*.md")),
    ],
    install_requires=[
        "spyne>=2.14",
        "lxml>=5",
        "twisted[tls]>=24.3",
        "cryptography>=42",
        "pluggy>=1.5",
        "geoip2>=4.8",
        "SQLAlchemy>=2.0",
        "PyYAML>=6",
        "bcrypt>=4.1",
        "prometheus_client>=0.17",
        "WsgiDAV>=4.3",
        "sortedcontainers>=2.4",
    ],
    extras_require={
        "redis": ["redis>=5"],
        "mysql": ["PyMySQL>=1.1"],
        "postgresql": ["psycopg[binary]>=3.1"],
        "test": [
            "pytest>=8", "zeep>=4.2", "redis>=5", "PyMySQL>=1.1", "psycopg[binary]>=3.1", "aiosmtpd>=1.4",
            "mmdb-writer>=0.2.7", "netaddr>=1.0", "requests>=2.31", "ruff>=0.6",
        ],
    },
    entry_points={
        "console_scripts": [
            "apiserver = apiserver.cli.main:main",
            "cpcmd = apiserver.cli.cpcmd:main",
        ],
    },
)
