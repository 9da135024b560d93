from setuptools import find_packages, setup

setup(
    name="apiserver",
    version="0.1.0",
    description="ApisCP-compatible SOAP/XML-RPC API server with a pluggy plugin framework",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["apiserver", "apiserver.*"]) + ["twisted.plugins"],
    package_data={"apiserver.lifecycle": ["plan_files/*.ini", "plan_files/.skeleton.ini"]},
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
