using System.Text;
using Broker.Storage.Errors;
using Broker.Storage.Groups;
using Broker.Storage.Topics;

namespace Broker.Storage.Tests;

public sealed class TopicStoreTests : IDisposable
{
    private readonly TempDirectory _data = new();

    private StorageOptions Options => new() { DataDirectory = _data.Path, MaxMessageBytes = 4096 };

    public void Dispose() => _data.Dispose();

    [Fact]
    public async Task Appended_batches_survive_a_reopen_with_their_offsets_and_content()
    {
        await using (var store = await TopicStore.OpenAsync(Options))
        {
            await store.CreateTopicAsync("jobs", ifNotExists: false, default);
            var first = await (await store.GetTopicAsync("jobs")).AppendAsync(Messages("a", "b", "c"));
            var second = await (await store.GetTopicAsync("jobs")).AppendAsync(Messages("d"));
            Assert.Equal(new AppendResult(0, 3), first);
            Assert.Equal(new AppendResult(3, 1), second);
        }

        await using (var store = await TopicStore.OpenAsync(Options))
        {
            var topic = (await store.GetTopicAsync("jobs"));
            Assert.Equal(4, topic.NextOffset);
            var read = await ReadAsync(topic, "g", 4);
            Assert.Equal(["a", "b", "c", "d"], read.Select(d => Encoding.UTF8.GetString(d.Message.Payload.Span)));
            Assert.Equal([0L, 1, 2, 3], read.Select(d => d.Offset));
            Assert.Equal(4, (await topic.AppendAsync(Messages("e"))).FirstOffset);
        }
    }

    [Fact]
    public async Task Concurrent_appends_get_distinct_contiguous_offsets()
    {
        await using var store = await TopicStore.OpenAsync(Options);
        await store.CreateTopicAsync("jobs", false, default);
        var topic = (await store.GetTopicAsync("jobs"));

        var results = await Task.WhenAll(Enumerable.Range(0, 200).Select(i =>
            Task.Run(() => topic.AppendAsync(Messages(Enumerable.Range(0, 1 + i % 5).Select(j => $"{i}-{j}").ToArray())))));

        var offsets = results.SelectMany(r => Enumerable.Range(0, r.Count).Select(k => r.FirstOffset + k)).Order().ToList();
        Assert.Equal(Enumerable.Range(0, offsets.Count).Select(i => (long)i), offsets);
        Assert.Equal(offsets.Count, topic.NextOffset);
    }

    [Fact]
    public async Task Acknowledged_messages_are_not_delivered_again_after_a_reopen_and_the_rest_are()
    {
        await using (var store = await TopicStore.OpenAsync(Options))
        {
            await store.CreateTopicAsync("jobs", false, default);
            var topic = (await store.GetTopicAsync("jobs"));
            await topic.AppendAsync(Messages(Enumerable.Range(0, 10).Select(i => $"m{i}").ToArray()));
            var (group, created) = await topic.GetOrCreateGroupAsync("workers", GroupStart.Earliest, null, default);
            Assert.True(created);
            var member = group.Join(100);
            var delivered = await FetchExactlyAsync(group, member, 10);
            var toAck = delivered.Where(d => d.Offset is < 5 or 7).Select(d => new DeliveryRef(d.Offset, d.Token)).ToList();
            var result = await group.SettleAsync(new SettleAction.Ack(), toAck);
            Assert.Equal(6, result.Accepted);
            Assert.Empty(result.Failures);
        }

        await using (var store = await TopicStore.OpenAsync(Options))
        {
            var read = await ReadAsync((await store.GetTopicAsync("jobs")), "workers", 4);
            Assert.Equal([5L, 6, 8, 9], read.Select(d => d.Offset));
            // Each was delivered once before the restart, and delivery counts are kept in the state log.
            Assert.All(read, d => Assert.Equal(2, d.Attempt));
            var description = await (await store.GetTopicAsync("jobs")).DescribeAsync(default);
            Assert.Equal(5, description.Groups.Single().AckFloor);
        }
    }

    [Fact]
    public async Task A_batch_with_one_bad_message_writes_nothing()
    {
        await using var store = await TopicStore.OpenAsync(Options);
        await store.CreateTopicAsync("jobs", false, default);
        var topic = (await store.GetTopicAsync("jobs"));
        var batch = new List<AppendMessage>(Messages("ok"))
        {
            AppendMessage.FromPayload(new byte[5000]),
        };

        var error = await Assert.ThrowsAsync<BrokerException>(() => topic.AppendAsync(batch));
        Assert.Equal(BrokerErrorCode.MessageTooLarge, error.Code);
        Assert.Equal(0, topic.NextOffset);
        Assert.Equal(0, (await topic.AppendAsync(Messages("next"))).FirstOffset);
    }

    [Fact]
    public async Task Garbage_after_the_last_commit_is_ignored_on_recovery()
    {
        // Invariant: recovery restores exactly the last completed commit; bytes past it (a torn write) are ignored
        // and overwritten by later appends.
        long tail;
        // 1. Write with commit-wait, close keeping the files.
        await using (var store = await TopicStore.OpenAsync(Options))
        {
            await store.CreateTopicAsync("jobs", false, default);
            await (await store.GetTopicAsync("jobs")).AppendAsync(Messages("one", "two"));
            tail = (await store.GetTopicAsync("jobs")).Log.Durable.Address;
        }
        // 2. Corrupt the tail: garbage where the next entry would go.
        string segment = Path.Combine(_data.Path, "topics", "jobs", "log", "log.0");
        await using (var file = new FileStream(segment, FileMode.Open, FileAccess.Write))
        {
            file.Position = tail;
            file.Write(Enumerable.Repeat((byte)0xAB, 4096).ToArray());
        }
        // 3. Recover, assert, write more, recover again.
        await using (var store = await TopicStore.OpenAsync(Options))
        {
            var topic = (await store.GetTopicAsync("jobs"));
            Assert.Equal(2, topic.NextOffset);
            Assert.Equal(2, (await topic.AppendAsync(Messages("three"))).FirstOffset);
        }
        await using (var store = await TopicStore.OpenAsync(Options))
        {
            var read = await ReadAsync((await store.GetTopicAsync("jobs")), "g", 3);
            Assert.Equal(["one", "two", "three"], read.Select(d => Encoding.UTF8.GetString(d.Message.Payload.Span)));
        }
    }

    [Fact]
    public async Task Every_commit_is_recovered_from_a_crash_image_of_the_folder()
    {
        // A copy of the folder taken while the store is open (no close, no final commit) stands for the disk after
        // a crash: every append that was reported durable is in it.
        const int commits = 300;
        string crashed = Path.Combine(_data.Path, "..", Path.GetFileName(_data.Path) + "-crashed");
        await using (var store = await TopicStore.OpenAsync(Options))
        {
            await store.CreateTopicAsync("jobs", false, default);
            var topic = await store.GetTopicAsync("jobs");
            for (int i = 0; i < commits; i++)
                await topic.AppendAsync(Messages($"m{i}"));
            CopyDirectory(_data.Path, crashed);
        }
        try
        {
            var options = Options;
            options.DataDirectory = crashed;
            await using var recovered = await TopicStore.OpenAsync(options);
            var topic = await recovered.GetTopicAsync("jobs");
            Assert.Equal(commits, topic.NextOffset);
            var read = await ReadAsync(topic, "g", commits);
            Assert.Equal(Enumerable.Range(0, commits).Select(i => $"m{i}"), read.Select(d => Encoding.UTF8.GetString(d.Message.Payload.Span)));
        }
        finally
        {
            Directory.Delete(crashed, recursive: true);
        }
    }

    private static void CopyDirectory(string from, string to)
    {
        foreach (string directory in Directory.EnumerateDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, directory)));
        Directory.CreateDirectory(to);
        foreach (string file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            using var source = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            using var target = File.Create(Path.Combine(to, Path.GetRelativePath(from, file)));
            source.CopyTo(target);
        }
    }

    [Fact]
    public async Task A_deleted_topic_is_gone_with_its_files_and_can_be_created_again_empty()
    {
        await using var store = await TopicStore.OpenAsync(Options);
        await store.CreateTopicAsync("jobs", false, default);
        await (await store.GetTopicAsync("jobs")).AppendAsync(Messages("x"));

        await store.DeleteTopicAsync("jobs", default);

        Assert.Empty(store.ListTopics());
        Assert.False(Directory.Exists(Path.Combine(_data.Path, "topics", "jobs")));
        var error = await Assert.ThrowsAsync<BrokerException>(async () => await store.GetTopicAsync("jobs"));
        Assert.Equal(BrokerErrorCode.TopicNotFound, error.Code);
        await store.CreateTopicAsync("jobs", false, default);
        Assert.Equal(0, (await store.GetTopicAsync("jobs")).NextOffset);
    }

    [Fact]
    public async Task Topics_are_opened_on_first_use_and_a_group_creates_its_dead_letter_topic_without_opening_it()
    {
        await using (var store = await TopicStore.OpenAsync(Options))
        {
            await store.CreateTopicAsync("jobs", false, default);
            await store.CreateTopicAsync("idle", false, default);
            Assert.Equal(0, store.OpenTopicCount);
            var jobs = await store.GetTopicAsync("jobs");
            await jobs.AppendAsync(Messages("a"));
            await jobs.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
            Assert.Equal(["idle", "jobs", "jobs.dlq"], store.ListTopics());
            Assert.Equal(1, store.OpenTopicCount);
        }

        await using (var store = await TopicStore.OpenAsync(Options))
        {
            Assert.Equal(["idle", "jobs", "jobs.dlq"], store.ListTopics());
            Assert.Equal(0, store.OpenTopicCount);
            await store.DeleteTopicAsync("idle", default);
            Assert.False(Directory.Exists(Path.Combine(_data.Path, "topics", "idle")));
            var read = await ReadAsync(await store.GetTopicAsync("jobs"), "g", 1);
            Assert.Equal("a", Encoding.UTF8.GetString(Assert.Single(read).Message.Payload.Span));
            Assert.Equal(0, (await store.GetTopicAsync("jobs.dlq")).NextOffset);
            Assert.Equal(2, store.OpenTopicCount);
        }
    }

    [Fact]
    public async Task With_a_single_commit_slot_appends_to_many_topics_at_once_all_become_durable()
    {
        var options = Options;
        options.MaxConcurrentCommits = 1;
        await using var store = await TopicStore.OpenAsync(options);
        var names = Enumerable.Range(0, 40).Select(i => $"t{i}").ToList();
        foreach (string name in names)
            await store.CreateTopicAsync(name, false, default);
        var topics = await Task.WhenAll(names.Select(async name => await store.GetTopicAsync(name)));

        var appends = topics.SelectMany(topic => Enumerable.Range(0, 10).Select(i => Task.Run(() => topic.AppendAsync(Messages($"{topic.Name}-{i}")))));
        var results = await Task.WhenAll(appends).WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(400, results.Length);
        Assert.All(topics, topic => Assert.Equal(10, topic.NextOffset));
    }

    internal static List<AppendMessage> Messages(params string[] payloads) =>
        payloads.Select(p => AppendMessage.FromPayload(Encoding.UTF8.GetBytes(p))).ToList();

    private static async Task<IReadOnlyList<GroupDelivery>> ReadAsync(Topic topic, string groupName, int count)
    {
        var (group, _) = await topic.GetOrCreateGroupAsync(groupName, GroupStart.Earliest, null, default);
        var member = group.Join(1000);
        try
        {
            var read = await FetchExactlyAsync(group, member, count);
            using var shortWait = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => group.FetchAsync(member, 10, shortWait.Token));
            return read;
        }
        finally
        {
            group.Leave(member);
        }
    }

    internal static async Task<List<GroupDelivery>> FetchExactlyAsync(ConsumerGroup group, GroupMember member, int count)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var all = new List<GroupDelivery>();
        while (all.Count < count)
            all.AddRange(await group.FetchAsync(member, count - all.Count, timeout.Token));
        return all;
    }
}
