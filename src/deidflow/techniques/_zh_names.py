"""Word lists for detecting Chinese personal names and addresses in free text.

Data only. The surname list covers the common single-character surnames (the 百家姓 entries
still in use plus the most frequent in the 2020 census); together they cover well over 95 % of
the population. Compound surnames are listed separately because a name starting with one has
a two-character surname (欧阳娜娜 is 欧阳 + 娜娜).
"""

from __future__ import annotations

SINGLE_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝"
    "龚邵万钱严覃武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞"
    "左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕"
    "屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧"
    "闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝官封谈匡鞠惠荆乐冀郁胥"
    "南班储原栗燕楚鄢劳谌奚皮粟冼蔺楼盘满闻位厉伊仝区郜海阚花权强帅屠豆朴盖练廉禹井祖漆巴丰支"
    "卿国狄平计索宣晋相初门云容敬来扈晁芮都普阙浦戈伏鹿薄邸雍辜羊阿乌母裘亓修邰赫杭况那宿鲜印"
    "逯隆茹诸战慕危玉银亢嵇公哈湛宾戎勾茅利於呼居揭干但尉冶斯元束檀衣信展阴昝智幸奉植衡富尧闭由"
    "傅阎步洪萧赖凤邴汲糜谯铁习蓟郦郗钮"
)

COMPOUND_SURNAMES = (
    "欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文",
    "司徒", "夏侯", "令狐", "轩辕", "端木", "独孤", "南宫", "西门", "百里", "呼延", "申屠",
    "太史", "闻人", "万俟", "澹台", "公冶", "宗政", "濮阳", "淳于", "单于", "赫连", "钟离",
)

# Words that introduce a person right after them: 患者王某, 家属：李四, 主治医生张敏华.
NAME_BEFORE = (
    "患者", "病人", "病患", "患儿", "家属", "丈夫", "妻子", "爱人", "儿子", "女儿", "父亲", "母亲",
    "之父", "之母", "监护人", "联系人", "陪同人", "陪护", "姓名", "签名", "签字", "医生", "医师",
    "大夫", "主任", "护士", "护师", "主治医生", "主治医师", "主管医生", "责任护士", "经治医生",
    "接诊医生", "会诊医生", "主诊医生", "上级医师", "住院医师", "代理人", "委托人", "申请人",
    "主任医师", "副主任医师", "主治", "记录医师", "记录者", "报告人", "审核人", "送检医生",
)

# Surnames that are also everyday function words (于昨日, 由医生, 和家属, 向患者): a name
# starting with one is only taken where a context word anchors its start (患者于某某), never
# from the words after it alone.
FUNCTION_SURNAMES = "于和由向时但都来那应相初门云平计国全原南海花强满位区盘楼皮乐从将把在以及与同当经"

# Words that follow a name: 王小明先生, 韩雪梅医生, 白雅宁是一位…, 施明远，53岁.
NAME_AFTER = (
    "先生", "女士", "小姐", "医生", "医师", "大夫", "主任", "护士", "护师", "教授", "老师",
    "同志", "患者", "本人", "家属", "之妻", "之夫", "之子", "之女", "之父", "之母", "是一位",
    "是一名", "为一名", "副主任", "主任医师", "主治医师", "，男", "，女", ",男", ",女", "（男",
    "（女", "(男", "(女", "博士", "，一位", "，现年", "，今年", "，患者", "，职业", "，从事",
)

# Characters that do not occur inside a given name in running text but often follow one
# (verbs, prepositions, particles). Keeping them out of the given-name class stops
# "患者王伟于昨日入院" from swallowing 于.
NOT_IN_GIVEN_NAME = (
    "于因在的是和与及为自今出入诉主因被由从向对将把已曾现等所之其他她它我你们年月日岁男女性副"
    "经近目最已还也都很并或即请见行给让使做有无不未个这那某住醉陪房议知签本"
    "先生士医师护患者病院科室号路街市省区县镇村说称述示诊治疗服用药检查术后前次时，。、"
)

# Provinces and province-level units: the anchor of a full postal address.
PROVINCES = (
    "北京", "天津", "上海", "重庆", "河北", "山西", "辽宁", "吉林", "黑龙江", "江苏", "浙江",
    "安徽", "福建", "江西", "山东", "河南", "湖北", "湖南", "广东", "海南", "四川", "贵州",
    "云南", "陕西", "甘肃", "青海", "台湾", "内蒙古", "广西", "西藏", "宁夏", "新疆", "香港",
    "澳门",
)

# Characters that end the words before an address (现居住于, 家住, 地址为): an address never
# starts with them, so extending an address backwards stops there.
NOT_IN_ADDRESS = (
    "于在住居址为是的与及或至到从向往现其他她我你们系籍位处：:，,。；;、 （）()\"'“”"
    "患者病男女岁名叫姓电话手机邮箱"
)

# Surrogate given-name characters for pseudonyms: common, gender-neutral, no rare glyphs.
SURROGATE_GIVEN = (
    "安宁子文嘉佳明华晓立俊思雨欣悦宇航昊晨若涵一诺家乐瑞泽书杰志远海涛建平春秋云峰博语"
)
SURROGATE_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘"
