using Broker.Storage.Errors;
using Broker.Storage.Topics;

namespace Broker.Storage.Tests;

/// <summary>
/// A topic's properties (what the SQS endpoint keeps of a queue: attributes, tags) on real files: written with the
/// topic or changed later, durable before the call returns (a crash right after keeps them), bounded, and a change
/// that breaks a bound changes nothing.
/// </summary>
public sealed class TopicPropertiesTests : IDisposable
{
    private readonly TempDirectory _data = new();

    private StorageOptions Options => new() { DataDirectory = _data.Path, MaxMessageBytes = 4096, TopicSegmentSizeBits = 20, TopicPageSizeBits = 12 };

    public void Dispose() => _data.Dispose();

    [Fact]
    public async Task Properties_written_at_creation_and_changed_later_survive_a_crash()
    {
        await using (var store = await TopicStore.OpenAsync(Options))
        {
            await store.CreateTopicAsync("jobs", ifNotExists: false, default, properties: new Dictionary<string, string> { ["a"] = "1", ["b"] = "2" });
            await store.CreateTopicAsync("plain", ifNotExists: false, default);
            // An existing topic keeps its own: creating it again changes nothing.
            Assert.False(await store.CreateTopicAsync("jobs", ifNotExists: true, default, properties: new Dictionary<string, string> { ["a"] = "other" }));
            var changed = await store.UpdatePropertiesAsync("jobs", new Dictionary<string, string?> { ["b"] = null, ["c"] = "3 é" }, default);
            Assert.Equal(["a=1", "c=3 é"], changed.Select(pair => $"{pair.Key}={pair.Value}"));
            await store.CrashAsync();
        }
        await using (var store = await TopicStore.OpenAsync(Options))
        {
            Assert.Equal(["a=1", "c=3 é"], store.PropertiesOf("jobs").Select(pair => $"{pair.Key}={pair.Value}"));
            Assert.Empty(store.PropertiesOf("plain"));
            // Removing the last leaves none, also after a restart.
            await store.UpdatePropertiesAsync("jobs", new Dictionary<string, string?> { ["a"] = null, ["c"] = null }, default);
            await store.CrashAsync();
        }
        await using (var reopened = await TopicStore.OpenAsync(Options))
            Assert.Empty(reopened.PropertiesOf("jobs"));
    }

    [Fact]
    public async Task A_change_breaking_a_limit_is_refused_and_changes_nothing_and_a_missing_topic_is_not_found()
    {
        await using var store = await TopicStore.OpenAsync(Options);
        await store.CreateTopicAsync("jobs", ifNotExists: false, default, properties: new Dictionary<string, string> { ["kept"] = "yes" });
        var tooMany = Enumerable.Range(0, TopicProperties.MaxCount).ToDictionary(i => $"p{i}", i => (string?)"x");
        var refusals = new Func<Task>[]
        {
            () => store.UpdatePropertiesAsync("jobs", tooMany, default),
            () => store.UpdatePropertiesAsync("jobs", new Dictionary<string, string?> { [""] = "x" }, default),
            () => store.UpdatePropertiesAsync("jobs", new Dictionary<string, string?> { [new string('n', TopicProperties.MaxNameLength + 1)] = "x" }, default),
            () => store.UpdatePropertiesAsync("jobs", new Dictionary<string, string?> { ["v"] = new string('v', TopicProperties.MaxValueLength + 1) }, default),
            () => store.CreateTopicAsync("other", ifNotExists: false, default, properties: new Dictionary<string, string> { [""] = "x" }),
        };
        foreach (var refused in refusals)
            Assert.Equal(BrokerErrorCode.InvalidRequest, (await Assert.ThrowsAsync<BrokerException>(refused)).Code);
        Assert.Equal(["kept=yes"], store.PropertiesOf("jobs").Select(pair => $"{pair.Key}={pair.Value}"));
        Assert.DoesNotContain("other", store.ListTopics());
        Assert.Equal(BrokerErrorCode.TopicNotFound, Assert.Throws<BrokerException>(() => store.PropertiesOf("missing")).Code);
        Assert.Equal(BrokerErrorCode.TopicNotFound,
            (await Assert.ThrowsAsync<BrokerException>(() => store.UpdatePropertiesAsync("missing", new Dictionary<string, string?> { ["a"] = "1" }, default))).Code);
    }
}
