"""The shell scripts' shared parts and the tool that builds each script from its parts."""
