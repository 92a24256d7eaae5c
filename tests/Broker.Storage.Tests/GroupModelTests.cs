using System.Text;
using Broker.Storage.Groups;
using Broker.Storage.Topics;
using Microsoft.Extensions.Time.Testing;

namespace Broker.Storage.Tests;

/// <summary>
/// Random interleavings of publish, fetch, ack, nack, delayed nack, extend, release, dead-letter, consumer leave,
/// clock moves (lease expiry), maintenance (truncation and checkpoints) and restarts, on real files under a fake
/// clock, checked step by step against a small model. Invariants: a confirmed ack is never undone (the message is
/// never delivered again, across restarts); no message is held by two consumers at once; attempt numbers count
/// deliveries (releases excepted); a message failing its fourth delivery goes to the dead-letter topic, which in the
/// end holds exactly the messages the model dead-lettered; a second group that acks in order sees every offset once,
/// however the first group's acks let the log be truncated (8 KiB messages, 1 MiB segments); the group state's own
/// invariants hold after every step; and in the end every published message was acknowledged or dead-lettered.
/// Crashes close the store without its final commits (each log recovers to its own last commit): confirmed acks,
/// confirmed publishes and routed dead letters hold; what rides along (delivery counts, settle timers) may be lost,
/// so the model only bounds a crashed-over message's next attempt, and accepts it back from an expected dead letter.
/// </summary>
public sealed class GroupModelTests : IDisposable
{
    // Half-second leases and delays while the clock moves in whole seconds: no deadline ever falls exactly on "now",
    // where the broker may expire a lease or not depending on when its timer runs.
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(10.5);
    private readonly TempDirectory _data = new();

    public void Dispose() => _data.Dispose();

    /// <summary>Seeds 1 to 6, or as many as <c>BROKER_MODEL_SEEDS</c> says (for long local soaks).</summary>
    public static IEnumerable<object[]> Seeds() =>
        Enumerable.Range(1, int.TryParse(Environment.GetEnvironmentVariable("BROKER_MODEL_SEEDS"), out int seeds) && seeds > 0 ? seeds : 6)
            .Select(seed => new object[] { seed });

    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task Random_interleavings_match_the_model(int seed)
    {
        var random = new Random(seed);
        var run = new ModelRun(_data.Path, new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero)));
        await run.StartAsync();
        try
        {
            for (int step = 0; step < 400; step++)
            {
                int dice = random.Next(100);
                if (dice < 15) await run.PublishAsync(random.Next(1, 6));
                else if (dice < 40) await run.FetchAsync(random.Next(ModelRun.Consumers));
                else if (dice < 55) await run.AckAsync(random);
                else if (dice < 60) run.Nack(random, delaySeconds: random.Next(2) * random.Next(1, 20));
                else if (dice < 64) run.Release(random);
                else if (dice < 68) run.Extend(random);
                else if (dice < 70) run.DeadLetter(random);
                else if (dice < 84) run.Advance(TimeSpan.FromSeconds(random.Next(0, 16)));
                else if (dice < 88) run.Rejoin(random.Next(ModelRun.Consumers));
                else if (dice < 92) await run.MaintainAsync(take: random.Next(0, 40));
                else if (dice < 95) await run.StaleAckAsync(random);
                else if (random.Next(2) == 0) await run.RestartAsync();
                else await run.CrashAsync();
                run.CheckInvariants(step);
            }
            await run.DrainAsync();
        }
        finally
        {
            await run.DisposeAsync();
        }
    }

    /// <summary>The system under test and its model, side by side.</summary>
    private sealed class ModelRun(string dataDirectory, FakeTimeProvider time) : IAsyncDisposable
    {
        public const int Consumers = 3;
        private const int MaxInFlight = 5;
        private const int MaxDeliveries = 4;

        private readonly StorageOptions _options = new()
        {
            DataDirectory = dataDirectory,
            MaxMessageBytes = 16 << 10,
            TopicSegmentSizeBits = 20,
            GroupStateCheckpointBytes = 512,
            MaintenanceInterval = TimeSpan.FromDays(1),   // maintenance runs when the model says so
        };

        // The model.
        private long _published;
        private readonly HashSet<long> _done = [];
        private readonly Dictionary<long, Held> _held = [];
        private readonly Dictionary<long, int> _attempts = [];
        private readonly Dictionary<long, long> _invisibleUntil = [];   // delayed nacks, in fake ticks
        private readonly List<(long Offset, ulong Token)> _oldTokens = [];
        private int _deadLetteredThisRun;
        private readonly HashSet<long> _deadLettered = [];
        // Offsets whose ride-along state a crash may have rolled back, until their next delivery shows where they are.
        private readonly HashSet<long> _uncertain = [];
        private long _inOrderNext;   // the next offset the in-order group "h" must get

        // The system.
        private TopicStore _store = null!;
        private ConsumerGroup _group = null!;
        private ConsumerGroup _inOrder = null!;
        private GroupMember _inOrderMember = null!;
        private readonly GroupMember[] _members = new GroupMember[Consumers];

        // Consumer -1: an extended lease kept across a restart, held by no consumer of the new run.
        private const int Orphan = -1;

        private sealed record Held(int Consumer, ulong Token, int Attempt, DateTimeOffset Deadline, bool Extended = false);

        public async Task StartAsync()
        {
            _store = await TopicStore.OpenAsync(_options, time);
            if (!_store.ListTopics().Contains("jobs"))
                await _store.CreateTopicAsync("jobs", false, default);
            var policy = new GroupPolicy(Lease, MaxDeliveries, DeadLetterTopic: "");
            var topic = await _store.GetTopicAsync("jobs");
            (_group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, policy, default);
            (_inOrder, _) = await topic.GetOrCreateGroupAsync("h", GroupStart.Earliest, policy, default);
            _inOrderMember = _inOrder.Join(1000);
            for (int i = 0; i < Consumers; i++)
                _members[i] = _group.Join(MaxInFlight);
        }

        public async Task PublishAsync(int count)
        {
            var batch = Enumerable.Range(0, count).Select(i => AppendMessage.FromPayload(Encoding.UTF8.GetBytes(Payload(_published + i)))).ToList();
            var result = await (await _store.GetTopicAsync("jobs")).AppendAsync(batch);
            Assert.Equal(_published, result.FirstOffset);
            _published += count;
        }

        public async Task FetchAsync(int consumer)
        {
            int free = MaxInFlight - _held.Values.Count(h => h.Consumer == consumer);
            var deliveries = await _group.FetchAvailableAsync(_members[consumer], free, default);
            Assert.True(deliveries.Count <= Math.Max(free, 0), $"consumer {consumer} got {deliveries.Count} with {free} free");
            foreach (var delivery in deliveries)
            {
                long offset = delivery.Offset;
                Assert.True(offset < _published, $"offset {offset} was never published");
                bool uncertain = _uncertain.Remove(offset);
                if (uncertain && _deadLettered.Contains(offset) && _done.Contains(offset))
                {
                    // Expected in the dead letters when the reader passed, but the count that said so was lost in a crash.
                    _deadLettered.Remove(offset);
                    _done.Remove(offset);
                }
                Assert.False(_done.Contains(offset), _deadLettered.Contains(offset)
                    ? $"offset {offset} delivered again (attempt {delivery.Attempt}) after it went to the dead letters"
                    : $"offset {offset} delivered again after its ack was confirmed");
                Assert.False(_held.ContainsKey(offset), $"offset {offset} delivered while consumer {_held.GetValueOrDefault(offset)?.Consumer} holds it");
                if (_invisibleUntil.TryGetValue(offset, out long until))
                    Assert.True(time.GetTimestamp() > until, $"offset {offset} delivered during its nack delay");
                _invisibleUntil.Remove(offset);
                int expectedAttempt = _attempts.GetValueOrDefault(offset) + 1;
                if (uncertain)
                {
                    // Lost counts lower the attempt; a lost release record raises it by one.
                    Assert.InRange(delivery.Attempt, 1, Math.Min(expectedAttempt + 1, MaxDeliveries));
                    expectedAttempt = delivery.Attempt;
                }
                Assert.Equal(expectedAttempt, delivery.Attempt);
                Assert.Equal(Payload(offset), Encoding.UTF8.GetString(delivery.Message.Payload.Span));
                _attempts[offset] = expectedAttempt;
                _held[offset] = new Held(consumer, delivery.Token, delivery.Attempt, time.GetUtcNow() + Lease);
            }
        }

        public async Task AckAsync(Random random)
        {
            var chosen = Pick(random);
            if (chosen.Count == 0)
                return;
            var result = await _group.SettleAsync(new SettleAction.Ack(), chosen.Select(c => new DeliveryRef(c.Key, c.Value.Token)).ToList());
            Assert.Equal(chosen.Count, result.Accepted);
            foreach (var (offset, held) in chosen)
            {
                Forget(offset, held);
                _done.Add(offset);
            }
        }

        public async Task StaleAckAsync(Random random)
        {
            var stale = _oldTokens.Where(t => !_held.TryGetValue(t.Offset, out var held) || held.Token != t.Token).ToList();
            if (stale.Count == 0)
                return;
            var (offset, token) = stale[random.Next(stale.Count)];
            var result = await _group.SettleAsync(new SettleAction.Ack(), [new DeliveryRef(offset, token)]);
            Assert.Equal(0, result.Accepted);
            // A token from before a restart may be unknown to the rebuilt group rather than known stale: refused either way.
            Assert.Contains(Assert.Single(result.Failures).Code, new[] { Errors.BrokerErrorCode.StaleDeliveryToken, Errors.BrokerErrorCode.UnknownDelivery });
        }

        public void Nack(Random random, int delaySeconds)
        {
            var delay = delaySeconds > 0 ? TimeSpan.FromSeconds(delaySeconds + 0.5) : TimeSpan.Zero;
            foreach (var (offset, held) in Settle(random, new SettleAction.Retry(delay, "model says no")))
            {
                Forget(offset, held);
                if (FailedForGood(offset, held, counted: true))
                    continue;
                if (delay > TimeSpan.Zero)
                    _invisibleUntil[offset] = time.GetTimestamp() + (long)(delay.TotalSeconds * time.TimestampFrequency);
            }
        }

        public void Release(Random random)
        {
            foreach (var (offset, held) in Settle(random, new SettleAction.Release()))
            {
                Forget(offset, held);
                _attempts[offset]--;
            }
        }

        public void Extend(Random random)
        {
            foreach (var (offset, held) in Settle(random, new SettleAction.Extend(Lease)))
                _held[offset] = held with { Deadline = time.GetUtcNow() + Lease, Extended = true };
        }

        public void DeadLetter(Random random)
        {
            foreach (var (offset, held) in Settle(random, new SettleAction.DeadLetter("model says dead", null)))
            {
                Forget(offset, held);
                _done.Add(offset);
                _deadLettered.Add(offset);
                _deadLetteredThisRun++;
            }
        }

        public void Advance(TimeSpan by)
        {
            time.Advance(by);
            foreach (var (offset, held) in _held.Where(h => h.Value.Deadline < time.GetUtcNow()).ToList())
            {
                Forget(offset, held);
                // A lease kept across a restart is routed when it expires, or when the reader reaches it: not counted.
                FailedForGood(offset, held, counted: held.Consumer != Orphan);
            }
        }

        public void Rejoin(int consumer)
        {
            _group.Leave(_members[consumer]);
            _members[consumer] = _group.Join(MaxInFlight);
            foreach (var (offset, held) in _held.Where(h => h.Value.Consumer == consumer).ToList())
            {
                Forget(offset, held);
                FailedForGood(offset, held, counted: true);
            }
        }

        /// <summary>
        /// A failed delivery that was the message's last: it goes to the dead letters. <paramref name="counted"/>: the
        /// broker routes it now (it counts in this run's total) rather than when its reader next passes it.
        /// </summary>
        private bool FailedForGood(long offset, Held held, bool counted)
        {
            if (held.Attempt < MaxDeliveries)
                return false;
            _done.Add(offset);
            _deadLettered.Add(offset);
            if (counted)
                _deadLetteredThisRun++;
            return true;
        }

        /// <summary>The in-order group takes what is there and acks it durably, then maintenance truncates and checkpoints.</summary>
        public async Task MaintainAsync(int take)
        {
            var deliveries = await _inOrder.FetchAvailableAsync(_inOrderMember, take, default);
            foreach (var delivery in deliveries)
            {
                Assert.Equal(_inOrderNext++, delivery.Offset);
                Assert.Equal(Payload(delivery.Offset), Encoding.UTF8.GetString(delivery.Message.Payload.Span));
            }
            if (deliveries.Count > 0)
                Assert.Equal(deliveries.Count, (await _inOrder.SettleAsync(new SettleAction.Ack(), deliveries.Select(d => new DeliveryRef(d.Offset, d.Token)).ToList())).Accepted);
            await _store.MaintainAllAsync(default);
        }

        // 8 KiB messages: a few hundred fill several 1 MiB segments, so maintenance truncates during the run.
        private static string Payload(long offset) => $"m{offset}".PadRight(8 << 10, '.');

        public void CheckInvariants(int step)
        {
            if ((_group.CheckInvariants() ?? _inOrder.CheckInvariants()) is { } broken)
                Assert.Fail($"step {step}: {broken}");
        }

        public async Task RestartAsync()
        {
            await WaitForDeadLettersAsync();
            await _store.DisposeAsync();
            // An extended lease survives with its token, held by nobody of the new run until its deadline; every
            // other delivery comes back at once. Delivery counts and nack delays survive too: they are in the state log.
            foreach (var (offset, held) in _held.ToList())
            {
                if (held.Extended)
                    _held[offset] = held with { Consumer = Orphan };
                else
                {
                    Forget(offset, held);
                    // Its last delivery was out when the broker went down: dead-lettered when the reader reaches it.
                    FailedForGood(offset, held, counted: false);
                }
            }
            _deadLetteredThisRun = 0;
            await StartAsync();
        }

        /// <summary>
        /// Closes the store as a process kill would, then starts again. Dead letters the model counted are waited for
        /// first (routed and recorded durably); everything else that was not committed may or may not survive.
        /// </summary>
        public async Task CrashAsync()
        {
            await WaitForDeadLettersAsync();
            await _store.CrashAsync();
            foreach (var (offset, held) in _held.ToList())
            {
                // Not into the stale tokens: an extended lease may come back with its token.
                _held.Remove(offset);
                FailedForGood(offset, held, counted: false);
            }
            for (long offset = 0; offset < _published; offset++)
            {
                if (!_done.Contains(offset) || _deadLettered.Contains(offset))
                    _uncertain.Add(offset);
            }
            // Settle timers and their clearing ride along with commits: any may or may not have survived.
            _invisibleUntil.Clear();
            _oldTokens.Clear();
            _deadLetteredThisRun = 0;
            await StartAsync();
        }

        public async Task DrainAsync()
        {
            for (int round = 0, idle = 0; round < 10_000 && _done.Count < _published && idle < 3; round++)
            {
                int doneBefore = _done.Count;
                time.Advance(TimeSpan.FromSeconds(30));   // every lease and delay is over
                foreach (var (offset, held) in _held.ToList())
                {
                    Forget(offset, held);
                    FailedForGood(offset, held, counted: held.Consumer != Orphan);
                }
                await FetchAsync(0);
                var mine = _held.Where(h => h.Value.Consumer == 0).ToList();
                if (mine.Count == 0)
                    continue;
                var result = await _group.SettleAsync(new SettleAction.Ack(), mine.Select(h => new DeliveryRef(h.Key, h.Value.Token)).ToList());
                Assert.Equal(mine.Count, result.Accepted);
                foreach (var (offset, held) in mine)
                {
                    Forget(offset, held);
                    _done.Add(offset);
                }
                idle = _done.Count > doneBefore ? 0 : idle + 1;
            }
            // What never came back after a crash went to the dead letters when the reader passed it: its count from
            // before the crash (a release's lowering lost) said it had had its last delivery.
            var neverBack = Enumerable.Range(0, (int)_published).Select(i => (long)i).Where(o => !_done.Contains(o)).ToList();
            Assert.All(neverBack, offset => Assert.True(_uncertain.Contains(offset), $"offset {offset} was never delivered again"));
            foreach (long offset in neverBack)
            {
                _done.Add(offset);
                _deadLettered.Add(offset);
            }
            Assert.Equal(Enumerable.Range(0, (int)_published).Select(i => (long)i), _done.Order());
            await WaitForDeadLettersAsync();
            var topic = await _store.GetTopicAsync("jobs");
            // Routing after a restart happens when the reader passes: wait (bounded) until every message is settled.
            using (var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
            {
                while ((await topic.DescribeAsync(default)).Groups.Single(g => g.Name == "g").AckFloor < _published)
                    await Task.Delay(10, deadline.Token);
            }

            // The in-order group got every offset once, in order, whatever was truncated meanwhile.
            await MaintainAsync(take: int.MaxValue);
            Assert.Equal(_published, _inOrderNext);
            // Both groups are past everything: the segments behind them were given back (the sizes make sure there are some).
            if (_published * (8 << 10) > 2 << 20)
                Assert.True(await topic.GetFirstOffsetAsync(default) > 0, "maintenance never truncated the log");

            // The dead-letter topic holds exactly what the model dead-lettered (a restart may repeat one, never lose one).
            var deadLetters = await _store.GetTopicAsync("jobs.dlq");
            var (reader, _) = await deadLetters.GetOrCreateGroupAsync("check", GroupStart.Earliest, null, default);
            var member = reader.Join(100_000);
            var letters = await reader.FetchAvailableAsync(member, 100_000, default);
            var originals = letters.Select(l => long.Parse(l.Message.Headers.Single(h => h.Key == "broker-dlq-original-offset").Value,
                System.Globalization.CultureInfo.InvariantCulture)).ToList();
            Assert.Equal(_deadLettered.Order(), originals.Distinct().Order());
            Assert.All(letters, l => Assert.Equal(Payload(long.Parse(l.Message.Headers.Single(h => h.Key == "broker-dlq-original-offset").Value,
                System.Globalization.CultureInfo.InvariantCulture)), Encoding.UTF8.GetString(l.Message.Payload.Span)));
            Assert.True(originals.Count <= 2 * _deadLettered.Count, $"{originals.Count} dead letters for {_deadLettered.Count} messages");
        }

        private List<KeyValuePair<long, Held>> Pick(Random random) =>
            _held.Where(_ => random.Next(3) == 0).ToList();

        private List<KeyValuePair<long, Held>> Settle(Random random, SettleAction action)
        {
            // Leases kept across a restart take acks (and extends) before the reader reaches them again; the model
            // sends them acks only.
            var chosen = Pick(random).Where(h => h.Value.Consumer != Orphan).ToList();
            if (chosen.Count == 0)
                return chosen;
            var result = _group.SettleAsync(action, chosen.Select(c => new DeliveryRef(c.Key, c.Value.Token)).ToList());
            Assert.True(result.IsCompleted, "only acks wait for the disk");
            Assert.True(chosen.Count == result.Result.Accepted,
                $"{action}: {result.Result.Accepted} of {chosen.Count} accepted at {time.GetUtcNow():HH:mm:ss}; refused: " +
                string.Join("; ", result.Result.Failures.Select(f => $"{f.Message} (held {_held[f.Delivery.Offset]})")));
            return chosen;
        }

        private void Forget(long offset, Held held)
        {
            _held.Remove(offset);
            _oldTokens.Add((offset, held.Token));
        }

        private async Task WaitForDeadLettersAsync()
        {
            // Dead letters are routed in the background; wait (bounded) until this run's are all recorded.
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            while ((await (await _store.GetTopicAsync("jobs")).DescribeAsync(default)).Groups.Single(g => g.Name == "g").DeadLetteredTotal < _deadLetteredThisRun)
                await Task.Delay(10, deadline.Token);
        }

        public async ValueTask DisposeAsync() => await _store.DisposeAsync();
    }
}
