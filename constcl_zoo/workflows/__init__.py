"""What the commands do, as functions the commands, the demo and the training side call: embedding many videos
(this process or a Ray cluster) and the task model a ``--model`` value means. Above ``load()``; commands only parse
arguments and call these."""
