"""Producer: ``python send.py N_RESIZE N_NOTIFY`` enqueues that many tasks of each kind."""
import sys

from jobs.tasks import notify, resize

if __name__ == "__main__":
    n_resize, n_notify = int(sys.argv[1]), int(sys.argv[2])
    for i in range(max(n_resize, n_notify)):
        if i < n_resize:
            resize.delay(i)
        if i < n_notify:
            notify.delay(f" user{i} ")
    print(f"sent {n_resize} resize and {n_notify} notify", flush=True)
