"""The study's shared training setup: every value SimCLR and MoCo have in common.

Values from the study (`docs/study.md`): ShuffleNetV2-0.5 encoder, projection output 256,
temperature 0.07, 400 epochs, batch 256 samples (512 views), lr 0.01, weight decay 1e-4,
augmentation MTC@(32, 64, 128, 256, 512) + AD@0.2. Method files (`simclr.py`, `moco.py`) start from here.
Override any key on the command line: `--config.optim.learning_rate=0.03`.
"""

import ml_collections

from ssl_jax.data import spec

STUDY_CROP_LENGTHS = (32, 64, 128, 256, 512)


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.method = 'simclr'  # a name of ssl_jax.methods.METHODS: 'simclr', 'moco' (v2), 'moco_v3', 'memory_bank', ...
  config.seed = 0

  # Data: the AoAM TFDS builder. 'simulated' needs no files; 'real' reads HDF5 from manual_dir.
  config.data = ml_collections.ConfigDict()
  config.data.source = 'simulated'  # 'simulated' | 'real'
  config.data.data_dir = ''  # TFDS data dir; '' -> ~/tensorflow_datasets
  config.data.manual_dir = ''  # where the real HDF5 files live (source='real')
  config.data.length = spec.LENGTH  # samples per example (L), 1024
  config.data.examples_per_class = 200  # simulated train examples per AoA class
  # 26 per AoA class = 5,850 test examples, the study's silhouette set.
  config.data.test_examples_per_class = spec.TEST_EXAMPLES_PER_CLASS
  config.data.snr_db_low = 0.0
  config.data.snr_db_high = 30.0
  config.data.sim_seed = 0
  # 'static': a fixed room, each AoA position keeps its reflections (as the servo testbed); 'random':
  # reflections redrawn per example (much harder AoA; see ssl_jax/data/simulate.py).
  config.data.environment = 'static'
  # 'recording': SNR, carrier offset and the transmitter's settings are fixed per recording session
  # (position, modulation), examples are slices of it, as in the real AoAM; 'example': redrawn per example.
  config.data.nuisances = 'recording'
  config.data.prefetch = 2
  # -1: the data order follows config.seed. >= 0: it follows this seed (members share one order this way).
  config.data.order_seed = -1

  # Encoder and projection head.
  config.model = ml_collections.ConfigDict()
  config.model.stage_repeats = (4, 8, 4)  # torchvision's; tests shrink it to compile fast
  # The encoder's layout (ShuffleNetV2Encoder; how it was chosen: docs/design.md, "The encoder's layout").
  config.model.stem_stride = 1
  config.model.stem_pool = True
  config.model.dw_kernel = 3
  config.model.unit_downsample = 'pool'
  config.model.input_scaling = 'none'
  config.model.output_dim = 256  # projection output used in the loss
  config.model.hidden_dim = 1024  # projection MLP hidden width
  # 'none': the study's MLP. 'batch': standardise the projection over the global batch (no affine, no running
  # statistics), the BN that ends MoCo v3's projector (the side experiment configs/moco_short_run.py).
  config.model.projection_norm = 'none'
  config.model.dtype = 'float32'

  config.temperature = 0.07

  # Augmentation: multi-time cropping over crop_lengths and antenna dropout @p.
  config.augment = ml_collections.ConfigDict()
  config.augment.enabled = True  # False: the "no augmentation" ablation (both views = the example)
  config.augment.crop_lengths = STUDY_CROP_LENGTHS
  config.augment.antenna_dropout = 0.2
  # -1: each step's two crop lengths are drawn from the run's key (config.seed). >= 0: from this seed, so
  # that runs of other seeds (the members of a member run) share each step's crop lengths, a static shape.
  config.augment.crop_length_seed = -1
  # Label-preserving IQ augmentations (ssl_jax/augment.py), not the study's: each view gets them after MTC
  # and AD, inside the step, for every method; all off by default, each independent of `enabled`. All act
  # on every antenna alike, so the inter-antenna phase differences that carry the AoA are kept. A
  # PER-ANTENNA phase change (another rotation on each antenna) destroys the AoA label: none of these is one.
  config.augment.iq = ml_collections.ConfigDict()
  config.augment.iq.cyclic_shift = False  # roll each example in time by a uniform number of samples
  config.augment.iq.rotate_90 = False  # multiply by j^k, k uniform in {0..3} (for AMC; keeps AoA too)
  config.augment.iq.common_phase = False  # multiply by e^{j theta}, theta uniform in [0, 2 pi)
  config.augment.iq.max_frequency_shift = 0.0  # carrier shift uniform in [-f, f] cycles/sample, f <= 0.5; 0: off
  config.augment.iq.snr_db = ()  # (low, high): add noise at an SNR uniform in [low, high] dB; (): off

  # Schedule and optimiser.
  config.num_epochs = 400
  config.num_train_steps = -1  # >= 1: train that many steps; -1: train num_epochs epochs (0 is refused)
  config.batch_size = 256  # samples per global step (2 * batch_size views)
  config.optim = ml_collections.ConfigDict()
  # SGD with momentum and coupled L2 decay, as torch.optim.SGD (ssl_jax/optim.py).
  config.optim.learning_rate = 0.01
  config.optim.lr_scaling = 'none'  # 'none' | 'linear' (lr = learning_rate * batch_size / 256)
  config.optim.momentum = 0.9
  config.optim.weight_decay = 1e-4
  config.optim.warmup_epochs = 10.0
  config.optim.schedule = 'cosine'  # 'cosine' | 'constant'

  # Loop, logging, checkpoints.
  config.log_every_steps = 50
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 2  # the newest N stay on disk; 0 keeps every checkpoint
  config.progress_bar = True
  # Profile steps profile_first_step .. + profile_num_steps - 1 into WORKDIR/profile (JAX's profiler; open the
  # trace in TensorBoard's profile plugin or Perfetto). 0: no profile.
  config.profile_first_step = 0
  config.profile_num_steps = 5
  # Keys a resume may change on purpose, comma-separated: 'num_train_steps' and/or 'num_epochs'. The steps
  # after the restored one follow the new schedule; the change is recorded (ssl_jax/workdir/resume.py).
  config.allow_resume_changes = ''

  # Online monitor (ssl_jax/monitor.py): weighted kNN accuracy (InstDisc / solo-learn vote) of the frozen
  # encoder on both tasks, bank from the train split and queries from the test split, a fixed subset of
  # per_class examples of every AoA class; at step 0 of a new run, every every_steps steps and the last.
  config.monitor = ml_collections.ConfigDict()
  config.monitor.every_steps = 500  # 0: off
  config.monitor.k = 20
  config.monitor.temperature = 0.07
  config.monitor.bank_per_class = 10  # train examples per AoA class (2,250 in all)
  config.monitor.query_per_class = 4  # test examples per AoA class (900 in all)
  config.monitor.batch_size = 256  # examples per encoder call
  config.monitor.seed = 0  # draws the subset

  # Members: K runs of this config trained by one program (ssl_jax/members.py). count = 1: a plain run.
  # Each list holds `count` values (one per member) or is empty (every member takes the config's value;
  # seeds: config.seed + k). Members share every shape (model, batch, crop set, queue size).
  config.members = ml_collections.ConfigDict()
  config.members.count = 1
  config.members.seed = ()  # per member: initial weights and view draws (+ data order with data_order='member')
  config.members.temperature = ()
  config.members.learning_rate = ()  # config.optim.learning_rate per member
  config.members.weight_decay = ()  # config.optim.weight_decay per member
  config.members.momentum = ()  # config.moco.momentum (the EMA momentum base) per member: MoCo methods only
  config.members.antenna_dropout = ()  # config.augment.antenna_dropout per member
  config.members.data_order = 'shared'  # 'shared': config.seed's batches for all; 'member': each member's seed
  config.members.devices = 1  # devices along the member axis of the mesh (divides count and the device count)

  # Multi-host (empty: single process).
  config.distributed = ml_collections.ConfigDict()
  config.distributed.coordinator_address = ''
  config.distributed.num_processes = 1
  config.distributed.process_id = 0
  return config
