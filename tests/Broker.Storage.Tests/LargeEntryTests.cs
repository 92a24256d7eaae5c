using Broker.Storage.Groups;
using Broker.Storage.Topics;

namespace Broker.Storage.Tests;

/// <summary>
/// Entries larger than a log page are stored as fragments. With 4 KiB pages these tests write messages of up to
/// 64 KiB (and group-state records far over a 64 KiB page) and read them back through every read path.
/// </summary>
public sealed class LargeEntryTests : IDisposable
{
    private readonly TempDirectory _data = new();

    private StorageOptions Options => new()
    {
        DataDirectory = _data.Path,
        TopicPageSizeBits = 12,
        MaxMessageBytes = 64 << 10,
        MaintenanceInterval = TimeSpan.FromDays(1),
    };

    public void Dispose() => _data.Dispose();

    /// <summary>Payload of <paramref name="size"/> bytes whose content depends on its index, so a mix-up shows.</summary>
    private static byte[] Payload(int index, int size) =>
        Enumerable.Range(0, size).Select(i => (byte)(i * 31 + index * 7)).ToArray();

    private static readonly int[] Sizes = [10, 4000, 4096, 9000, 65_000, 1, 20_000, 4033, 64_000];

    [Fact]
    public async Task Messages_larger_than_a_page_are_delivered_whole_in_order_and_survive_a_reopen()
    {
        var batch = Sizes.Select((size, i) => new AppendMessage(
            Key: new byte[] { (byte)i }, Payload: Payload(i, size),
            Headers: [new("size", size.ToString(System.Globalization.CultureInfo.InvariantCulture))])).ToList();
        await using (var store = await TopicStore.OpenAsync(Options))
        {
            await store.CreateTopicAsync("big", false, default);
            var topic = (await store.GetTopicAsync("big"));
            await topic.AppendAsync(batch[..4]);
            await topic.AppendAsync(batch[4..]);
            var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
            var member = group.Join(100);
            var delivered = await TopicStoreTests.FetchExactlyAsync(group, member, Sizes.Length);
            AssertDelivered(delivered, Enumerable.Range(0, Sizes.Length));

            // Nack two large ones: redelivery reads them again by address.
            await group.SettleAsync(new SettleAction.Retry(TimeSpan.Zero, null), [Ref(delivered[4]), Ref(delivered[8])]);
            var again = await TopicStoreTests.FetchExactlyAsync(group, member, 2);
            AssertDelivered(again, [4, 8]);
            await group.SettleAsync(new SettleAction.Ack(), delivered.Where(d => d.Offset is not (4 or 8)).Select(Ref).ToList());
        }

        await using (var store = await TopicStore.OpenAsync(Options))
        {
            var topic = (await store.GetTopicAsync("big"));
            Assert.Equal(Sizes.Length, topic.NextOffset);
            var group = topic.FindGroup("g")!;
            var member = group.Join(100);
            AssertDelivered(await TopicStoreTests.FetchExactlyAsync(group, member, 2), [4, 8]);
            var fresh = (await topic.GetOrCreateGroupAsync("fresh", GroupStart.Earliest, null, default)).Group;
            AssertDelivered(await TopicStoreTests.FetchExactlyAsync(fresh, fresh.Join(100), Sizes.Length), Enumerable.Range(0, Sizes.Length));
            var info = await topic.DescribeAsync(default);
            Assert.Equal(0, info.FirstOffset);
        }
    }

    [Fact]
    public async Task A_message_over_the_limit_is_still_refused()
    {
        await using var store = await TopicStore.OpenAsync(Options);
        await store.CreateTopicAsync("big", false, default);
        var topic = await store.GetTopicAsync("big");
        var error = await Assert.ThrowsAsync<Errors.BrokerException>(() =>
            topic.AppendAsync([AppendMessage.FromPayload(new byte[(64 << 10) + 1])]));
        Assert.Equal(Errors.BrokerErrorCode.MessageTooLarge, error.Code);
    }

    [Fact]
    public async Task A_group_snapshot_larger_than_a_state_page_survives_a_checkpoint_and_a_reopen()
    {
        // Every other offset of 100,000 acked: the snapshot holds 50,000 runs (600 KB), far over the 32 KiB state page.
        const int count = 100_000;
        var options = Options;
        await using (var store = await TopicStore.OpenAsync(options))
        {
            await store.CreateTopicAsync("many", false, default);
            var topic = (await store.GetTopicAsync("many"));
            foreach (var chunk in Enumerable.Range(0, count).Chunk(5000))
                await topic.AppendAsync(TopicStoreTests.Messages(chunk.Select(i => $"m{i}").ToArray()));
            var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
            var member = group.Join(count);
            var delivered = await TopicStoreTests.FetchExactlyAsync(group, member, count);
            foreach (var frame in delivered.Where(d => d.Offset % 2 == 1).Chunk(5000))
                Assert.Equal(frame.Length, (await group.SettleAsync(new SettleAction.Ack(), frame.Select(Ref).ToList())).Accepted);
            await store.MaintainAllAsync(default);
        }

        await using (var store = await TopicStore.OpenAsync(options))
        {
            var group = (await store.GetTopicAsync("many")).FindGroup("g")!;
            var again = await TopicStoreTests.FetchExactlyAsync(group, group.Join(count), count / 2);
            Assert.Equal(Enumerable.Range(0, count / 2).Select(i => 2L * i), again.Select(d => d.Offset));
        }
    }

    [Fact]
    public async Task A_topic_keeps_the_page_size_it_was_created_with_when_the_setting_changes()
    {
        // Written with 256 KiB pages (20 KB entries stored whole), read back with the setting at 4 KiB pages.
        var sizes = Enumerable.Range(0, 40).Select(i => 20_000 + i).ToArray();
        var wide = Options;
        wide.TopicPageSizeBits = 18;
        await using (var store = await TopicStore.OpenAsync(wide))
        {
            await store.CreateTopicAsync("kept", false, default);
            await (await store.GetTopicAsync("kept")).AppendAsync(sizes.Select((size, i) => AppendMessage.FromPayload(Payload(i, size))).ToList());
        }

        await using (var store = await TopicStore.OpenAsync(Options))
        {
            var topic = await store.GetTopicAsync("kept");
            Assert.Equal(18, topic.Layout.LogPageSizeBits);
            var group = (await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default)).Group;
            var delivered = await TopicStoreTests.FetchExactlyAsync(group, group.Join(100), sizes.Length);
            Assert.Equal(sizes.Select((size, i) => Payload(i, size)), delivered.Select(d => d.Message.Payload.ToArray()));
            await store.CreateTopicAsync("new", false, default);
            Assert.Equal(12, (await store.GetTopicAsync("new")).Layout.LogPageSizeBits);
        }
    }

    [Fact]
    public async Task Topics_past_the_page_budget_and_dead_letter_topics_get_small_pages_and_keep_them()
    {
        // 256 KiB pages: 4 x 256 KiB + 2 x 32 KiB in memory per topic, so a 2 MiB budget holds one such topic; small
        // topics take 2 x 64 KiB + 2 x 32 KiB.
        var options = Options;
        options.TopicPageSizeBits = 18;
        options.TopicPageBudgetMiB = 2;
        await using (var store = await TopicStore.OpenAsync(options))
        {
            await store.CreateTopicAsync("first", false, default);
            await store.CreateTopicAsync("second", false, default);
            var first = await store.GetTopicAsync("first");
            await first.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);

            Assert.Equal(18, first.Layout.LogPageSizeBits);
            Assert.Equal(20, first.Layout.LogGeometry.MemorySizeBits);
            Assert.Equal(17, (await store.GetTopicAsync("second")).Layout.LogGeometry.MemorySizeBits);
            Assert.Equal(TopicLayout.SmallPageSizeBits, (await store.GetTopicAsync("second")).Layout.LogPageSizeBits);
            Assert.Equal(TopicLayout.SmallPageSizeBits, (await store.GetTopicAsync("first.dlq")).Layout.LogPageSizeBits);

            // Deleting the large topic frees its share of the budget for the next one.
            await store.DeleteTopicAsync("first", default);
            await store.CreateTopicAsync("third", false, default);
            Assert.Equal(18, (await store.GetTopicAsync("third")).Layout.LogPageSizeBits);
        }

        // The sizes are recorded: a restart with a large budget changes nothing for existing topics.
        options.TopicPageBudgetMiB = 1024;
        await using (var reopened = await TopicStore.OpenAsync(options))
        {
            Assert.Equal(TopicLayout.SmallPageSizeBits, (await reopened.GetTopicAsync("second")).Layout.LogPageSizeBits);
            Assert.Equal(18, (await reopened.GetTopicAsync("third")).Layout.LogPageSizeBits);
        }
    }

    [Fact]
    public async Task A_topic_created_before_layouts_were_recorded_opens_with_the_old_page_sizes()
    {
        var options = Options;
        options.MaxMessageBytes = 1 << 20;
        await using (var store = await TopicStore.OpenAsync(options))
            await store.CreateTopicAsync("old", false, default);
        // The metadata file as the previous version wrote it: no layout.
        string metadataPath = Path.Combine(_data.Path, "topics", "old", "topic.json");
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(metadataPath))!.AsObject();
        json.Remove("Layout");
        File.WriteAllText(metadataPath, json.ToJsonString());

        await using (var store = await TopicStore.OpenAsync(options))
        {
            var topic = await store.GetTopicAsync("old");
            Assert.Equal(new TopicLayout(LogPageSizeBits: 21, LogSegmentSizeBits: 26, GroupStatePageSizeBits: 18), topic.Layout);
            await topic.AppendAsync([AppendMessage.FromPayload(Payload(1, 900_000))]);
        }
        await using (var store = await TopicStore.OpenAsync(options))
        {
            var group = (await (await store.GetTopicAsync("old")).GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default)).Group;
            Assert.Equal(Payload(1, 900_000), Assert.Single(await TopicStoreTests.FetchExactlyAsync(group, group.Join(10), 1)).Message.Payload.ToArray());
        }
    }

    private static DeliveryRef Ref(GroupDelivery delivery) => new(delivery.Offset, delivery.Token);

    private static void AssertDelivered(IReadOnlyList<GroupDelivery> delivered, IEnumerable<int> expectedIndexes)
    {
        var expected = expectedIndexes.ToList();
        Assert.Equal(expected.Select(i => (long)i), delivered.Select(d => d.Offset));
        foreach (var (delivery, index) in delivered.Zip(expected))
        {
            Assert.Equal(Payload(index, Sizes[index]), delivery.Message.Payload.ToArray());
            Assert.Equal(new byte[] { (byte)index }, delivery.Message.Key.ToArray());
            Assert.Equal(Sizes[index].ToString(System.Globalization.CultureInfo.InvariantCulture), Assert.Single(delivery.Message.Headers).Value);
        }
    }
}
