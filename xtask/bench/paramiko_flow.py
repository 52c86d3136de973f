"""The apply flow (read, backup, write, restart) in ONE paramiko connection,
as a Fabric/paramiko-based tool would do it where no ssh binary exists.
Used by `cargo xtask bench` as comparison (e); not part of swapcfg."""
import sys, time, paramiko

host, port, user, key, known_hosts, cfg, new_file = sys.argv[1:8]
client = paramiko.SSHClient()
client.load_host_keys(known_hosts)
client.set_missing_host_key_policy(paramiko.RejectPolicy())
client.connect(host, port=int(port), username=user, key_filename=key,
               allow_agent=False, look_for_keys=False)
sftp = client.open_sftp()
with sftp.open(cfg, "rb") as f:
    old = f.read()
stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
with sftp.open(f"{cfg}.bak-{stamp}-pm", "wb") as f:
    f.write(old)
with open(new_file, "rb") as f:
    new = f.read()
tmp = cfg + ".pm.tmp"
with sftp.open(tmp, "wb") as f:
    f.write(new)
sftp.posix_rename(tmp, cfg)
_, stdout, _ = client.exec_command("true")
status = stdout.channel.recv_exit_status()
client.close()
sys.exit(status)
