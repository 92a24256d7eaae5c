using System.Text;
using Broker.Storage.Errors;
using Broker.Storage.Groups;
using Broker.Storage.Topics;
using Microsoft.Extensions.Time.Testing;

namespace Broker.Storage.Tests;

/// <summary>
/// Publish deduplication on real files under a clock the tests move: a second publish of an id within the window stores
/// nothing and is answered with the first one's offset (in one batch, across batches, racing publishes); after the
/// window the id is new again; the window survives a clean restart and a crash, also when every group acknowledged the
/// messages and maintenance ran (which keeps the drained segments on disk but drops them from the page cache); it holds
/// at most its capacity; bad ids are refused whole.
/// </summary>
public sealed class DeduplicationTests : IDisposable
{
    private static readonly DateTimeOffset Start = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private readonly TempDirectory _data = new();
    private readonly FakeTimeProvider _time = new(Start);

    private StorageOptions Options(int capacity = 1000, string? directory = null) => new()
    {
        DataDirectory = directory ?? _data.Path, TopicSegmentSizeBits = 20, TopicPageSizeBits = 12, MaintenanceInterval = TimeSpan.FromDays(40),
        DeduplicationWindow = TimeSpan.FromMinutes(5), MaxDeduplicationIds = capacity,
    };

    public void Dispose() => _data.Dispose();

    private async Task<(TopicStore Store, Topic Topic)> OpenAsync(int capacity = 1000)
    {
        var store = await TopicStore.OpenAsync(Options(capacity), _time);
        await store.CreateTopicAsync("jobs", ifNotExists: true, default);
        return (store, await store.GetTopicAsync("jobs"));
    }

    private static AppendMessage With(string? id, string payload = "job") =>
        AppendMessage.FromPayload(Encoding.UTF8.GetBytes(payload)) with { MessageId = id };

    [Fact]
    public async Task A_repeated_id_stores_nothing_and_is_answered_with_the_first_offset_in_one_batch_and_across_batches()
    {
        var (store, topic) = await OpenAsync();
        await using var _ = store;

        Assert.Equal(new AppendResult(0, 1), await topic.AppendAsync([With("a")]));
        var result = await topic.AppendAsync([With("b"), With("a"), With(null), With("b"), With("c")]);

        Assert.Equal((1L, 3), (result.FirstOffset, result.Count));
        Assert.Equal([(1, 0L), (3, 1L)], result.Duplicates);
        Assert.Equal([1L, 0, 2, 1, 3], Enumerable.Range(0, 5).Select(result.OffsetOf));
        Assert.Equal(4, topic.NextOffset);
        Assert.Equal(3, topic.DeduplicationIdCount);

        // A batch of duplicates only stores nothing at all.
        var again = await topic.AppendAsync([With("c"), With("a")]);
        Assert.Equal(0, again.Count);
        Assert.Equal([3L, 0], [again.OffsetOf(0), again.OffsetOf(1)]);
        Assert.Equal(4, topic.NextOffset);

        // Each stored message carries its id as the reserved header, and a consumer sees it.
        var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
        var delivered = await TopicStoreTests.FetchExactlyAsync(group, group.Join(10), 4);
        Assert.Equal(["a", "b", null, "c"], delivered.Select(d => d.Message.Headers.FirstOrDefault(h => h.Key == ReservedHeaders.MessageId).Value));
    }

    [Fact]
    public async Task After_the_window_an_id_is_new_again()
    {
        var (store, topic) = await OpenAsync();
        await using var _ = store;
        await topic.AppendAsync([With("a")]);

        _time.Advance(TimeSpan.FromMinutes(5) - TimeSpan.FromMilliseconds(1));
        Assert.Equal(0, (await topic.AppendAsync([With("a")])).OffsetOf(0));
        _time.Advance(TimeSpan.FromMilliseconds(1));
        var later = await topic.AppendAsync([With("a")]);
        Assert.Equal((1L, 1), (later.FirstOffset, later.Count));
        // The window now runs from the second publish.
        Assert.Equal(1, (await topic.AppendAsync([With("a")])).OffsetOf(0));
    }

    [Fact]
    public async Task The_window_survives_a_restart_and_a_crash_even_when_every_message_was_acknowledged_and_maintenance_ran()
    {
        var (store, topic) = await OpenAsync();
        long begin = topic.Log.BeginAddress;
        await using (store)
        {
            await topic.AppendAsync([With("a"), With("b")]);
            // 300 messages of 4 KiB: more than one 1 MiB segment, all acknowledged, then maintenance.
            var padding = new string('x', 4000);
            for (int i = 0; i < 3; i++)
                await topic.AppendAsync([.. Enumerable.Range(0, 100).Select(n => With($"bulk-{i}-{n}", padding))]);
            await AcknowledgeEverythingAsync(topic, 302);
            await topic.MaintainAsync();
            Assert.Equal(begin, topic.Log.BeginAddress);
        }

        (store, topic) = await OpenAsync();
        await using (store)
        {
            Assert.Equal(302, topic.DeduplicationIdCount);
            Assert.Equal(1, (await topic.AppendAsync([With("b")])).OffsetOf(0));
            await topic.AppendAsync([With("c")]);
            await store.CrashAsync();
        }

        _time.Advance(TimeSpan.FromMinutes(4));
        (store, topic) = await OpenAsync();
        await using (store)
        {
            var result = await topic.AppendAsync([With("a"), With("c"), With("d")]);
            Assert.Equal([(0, 0L), (1, 302L)], result.Duplicates);

            // Once the window has passed, maintenance frees the drained segments again.
            _time.Advance(TimeSpan.FromMinutes(2));
            await AcknowledgeEverythingAsync(topic, 2);
            await topic.MaintainAsync();
            Assert.True(topic.Log.BeginAddress > begin, "drained segments past the window are freed");
        }
    }

    [Fact]
    public async Task Drained_segments_kept_for_the_window_stay_on_disk_but_leave_the_page_cache()
    {
        // Under the test's own folder, not the temp folder: tmpfs (a common /tmp) keeps its pages whatever one advises,
        // and the checkout lies on a disk.
        Assert.True(OperatingSystem.IsLinux(), "the broker runs on Linux; mincore and posix_fadvise are Linux calls here");
        using var data = new TempDirectory(AppContext.BaseDirectory);
        Assert.True(PageCache.CanDrop(data.Path), $"{data.Path} is on a file system whose page cache cannot be dropped (tmpfs)");
        await using var store = await TopicStore.OpenAsync(Options(directory: data.Path), _time);
        await store.CreateTopicAsync("jobs", ifNotExists: true, default);
        var topic = await store.GetTopicAsync("jobs");
        var padding = new string('x', 4000);
        for (int i = 0; i < 3; i++)
            await topic.AppendAsync([.. Enumerable.Range(0, 100).Select(n => With($"bulk-{i}-{n}", padding))]);
        string firstSegment = Path.Combine(data.Path, "topics", "jobs", "log", "log.0");
        Assert.True(PageCache.ResidentPages(firstSegment) > 0, "a segment just written is in the page cache");

        await AcknowledgeEverythingAsync(topic, 300);
        // Round after round, as maintenance runs: the kernel's read-ahead for the group's reads may still be in flight
        // (its pages locked, which advice skips) and bring pages back after one round.
        long begin = topic.Log.BeginAddress;
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        do
        {
            await topic.MaintainAsync();
            Assert.Equal(begin, topic.Log.BeginAddress);
            await Task.Delay(10, deadline.Token);
        }
        while (PageCache.ResidentPages(firstSegment) > 0);
        Assert.True(File.Exists(firstSegment));
    }

    [Fact]
    public async Task After_a_restart_a_scheduled_message_is_remembered_by_its_publish_not_by_its_due_copy()
    {
        var (store, topic) = await OpenAsync();
        await using (store)
        {
            await topic.AppendAsync([With("later") with { Delay = TimeSpan.FromSeconds(30) }]);
            _time.Advance(TimeSpan.FromSeconds(31));
            var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
            var due = await TopicStoreTests.FetchExactlyAsync(group, group.Join(10), 1);
            Assert.Equal(1, due[0].Offset);  // the due copy; the publish was answered with 0
        }
        (store, topic) = await OpenAsync();
        await using (store)
            Assert.Equal(0, (await topic.AppendAsync([With("later")])).OffsetOf(0));
    }

    [Fact]
    public async Task Racing_publishes_of_one_id_store_it_once()
    {
        var (store, topic) = await OpenAsync();
        await using var _ = store;
        var results = await Task.WhenAll(Enumerable.Range(0, 8).Select(writer => Task.Run(() =>
            topic.AppendAsync([.. Enumerable.Range(0, 50).Select(n => With($"job-{n}", $"{writer}"))]))));

        Assert.Equal(50, topic.NextOffset);
        Assert.Equal(50, results.Sum(r => r.Count));
        // Every writer was told the one offset of each id.
        foreach (int n in Enumerable.Range(0, 50))
            Assert.Single(results.Select(r => r.OffsetOf(n)).Distinct());
    }

    [Fact]
    public async Task Past_its_capacity_the_window_forgets_its_oldest_ids()
    {
        var (store, topic) = await OpenAsync(capacity: 3);
        await using var _ = store;
        await topic.AppendAsync([With("a"), With("b"), With("c"), With("d")]);

        Assert.Equal(3, topic.DeduplicationIdCount);
        var result = await topic.AppendAsync([With("b"), With("a")]);
        Assert.Equal([(0, 1L)], result.Duplicates);
        Assert.Equal(4, result.OffsetOf(1));
    }

    [Theory]
    [InlineData("")]
    [InlineData("line\nbreak")]
    [InlineData("a-129-byte-id")]
    public async Task A_bad_id_refuses_the_batch_whole(string id)
    {
        if (id == "a-129-byte-id")
            id = new string('é', 64) + "x";
        var (store, topic) = await OpenAsync();
        await using var _ = store;
        var error = await Assert.ThrowsAsync<BrokerException>(() => topic.AppendAsync([With("fine"), With(id)]));
        Assert.Equal(BrokerErrorCode.InvalidRequest, error.Code);
        Assert.Contains("message 1", error.Message);
        Assert.Equal((0L, 0), (topic.NextOffset, topic.DeduplicationIdCount));
        Assert.Equal(0, (await topic.AppendAsync([With(new string('é', 64))])).FirstOffset);
    }

    private static async Task AcknowledgeEverythingAsync(Topic topic, int count)
    {
        var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
        var member = group.Join(1000);
        var delivered = await TopicStoreTests.FetchExactlyAsync(group, member, count);
        await group.SettleAsync(new SettleAction.Ack(), [.. delivered.Select(d => new DeliveryRef(d.Offset, d.Token))]);
        await group.PersistFloorAsync();
        group.Leave(member);
    }
}
