from setuptools import setup

setup(
    name="apiserver-example",
    version="0.1.0",
    description="Example apiserver plugin: one module, one event hook and one scope",
    python_requires=">=3.11",
    packages=["apiserver_example"],
    install_requires=["apiserver"],
    extras_require={"test": ["pytest>=8", "zeep>=4.2"]},
    # The one line that makes apiserver load the plugin: group apiserver.plugins, any name,
    # pointing at the object (here the package) that carries the @hookimpl functions.
    entry_points={"apiserver.plugins": ["example = apiserver_example"]},
)
